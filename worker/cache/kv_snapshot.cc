#include "worker/cache/kv_snapshot.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::StatusOr<KvSnapshot::CodebookHeader> KvSnapshot::ParseCodebook(
    const std::string& blob, const LayerKvShape& s) {
  CodebookHeader h;
  if (static_cast<int64_t>(blob.size()) < kCodebookHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("codebook blob of ", blob.size(), " bytes has no header"));
  }
  std::memcpy(&h.n_k, blob.data(), 4);
  std::memcpy(&h.n_v, blob.data() + 4, 4);
  std::memcpy(&h.records, blob.data() + 8, 8);
  // Bounded so the size arithmetic below cannot overflow.
  constexpr int64_t kMax = int64_t{1} << 31;
  if (h.n_k < 0 || h.n_v < 0 || h.records < 0 || h.records > kMax) {
    return absl::DataLossError("codebook blob has negative or huge counts");
  }
  const int64_t want = kCodebookHeaderBytes +
                       4 * (int64_t{h.n_k} * s.d_qk + int64_t{h.n_v} * s.d_vo) +
                       kCodebookRecordBytes * h.records;
  if (static_cast<int64_t>(blob.size()) != want) {
    return absl::DataLossError(
        absl::StrCat("codebook blob is ", blob.size(), " bytes; its header (",
                     h.n_k, " K codewords, ", h.n_v, " V codewords, ",
                     h.records, " records) needs ", want));
  }
  return h;
}

bool KvSnapshot::has_codebooks() const {
  for (const auto& layer : codebooks) {
    for (const std::string& b : layer) {
      if (!b.empty()) return true;
    }
  }
  return false;
}

bool KvSnapshot::has_residency_state() const {
  if (has_codebooks()) return true;
  for (const std::string& w : windows) {
    if (!w.empty()) return true;
  }
  return false;
}

int64_t KvSnapshot::tokens(int32_t layer, int32_t head) const {
  int64_t n =
      static_cast<int64_t>(rows[layer][head].size()) / RowBytes(shapes[layer]);
  if (layer < static_cast<int32_t>(codebooks.size()) &&
      !codebooks[layer][head].empty()) {
    auto h = ParseCodebook(codebooks[layer][head], shapes[layer]);
    if (h.ok()) n += h->records;
  }
  return n;
}

int64_t KvSnapshot::bytes() const {
  int64_t total = 0;
  for (const auto* part : {&rows, &codebooks}) {
    for (const auto& layer : *part) {
      for (const std::string& r : layer) {
        total += static_cast<int64_t>(r.size());
      }
    }
  }
  for (const std::string& w : windows) total += static_cast<int64_t>(w.size());
  return total;
}

absl::StatusOr<KvSnapshot> ExportKv(const KvCache& cache, const SequenceKv& kv,
                                    bool with_codebooks) {
  KvSnapshot snap;
  KvCache& mc = const_cast<KvCache&>(cache);
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    snap.shapes.push_back(s);
    snap.rows.emplace_back(s.n_kv_heads);
    const int64_t rb = KvSnapshot::RowBytes(s);
    for (int32_t h = 0; h < s.n_kv_heads; ++h) {
      if (kv.aux(l, h).tokens > 0 && !with_codebooks) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", l, " holds codebook entries, which have no row form"));
      }
      const int64_t n = kv.num_tokens(l, h);
      std::string& out = snap.rows[l][h];
      out.resize(n * rb);
      char* p = out.data();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t slot = kv.SlotOf(cache, l, h, i);
        std::memcpy(p, mc.pos_pool(l) + slot, 4);
        std::memcpy(p + 4, mc.k_pool(l) + slot * s.d_qk, 4 * s.d_qk);
        std::memcpy(p + 4 + 4 * s.d_qk, mc.v_pool(l) + slot * s.d_vo,
                    4 * s.d_vo);
        p += rb;
      }
    }
  }
  return snap;
}

absl::Status ImportKv(KvCache& cache, SequenceKv& kv, const KvSnapshot& snap) {
  if (static_cast<int32_t>(snap.shapes.size()) != cache.num_layers() ||
      snap.rows.size() != snap.shapes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV snapshot has ", snap.shapes.size(),
                     " layers, this cache ", cache.num_layers()));
  }
  std::vector<std::vector<int64_t>> counts(cache.num_layers());
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    const LayerKvShape& t = snap.shapes[l];
    if (s.n_kv_heads != t.n_kv_heads || s.d_qk != t.d_qk || s.d_vo != t.d_vo ||
        static_cast<int32_t>(snap.rows[l].size()) != s.n_kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV snapshot layer ", l, " is (kv heads ", t.n_kv_heads,
                       ", d_qk ", t.d_qk, ", d_vo ", t.d_vo, "), this cache (",
                       s.n_kv_heads, ", ", s.d_qk, ", ", s.d_vo, ")"));
    }
    const int64_t rb = KvSnapshot::RowBytes(s);
    for (const std::string& r : snap.rows[l]) {
      if (static_cast<int64_t>(r.size()) % rb != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("KV snapshot layer ", l, ": ", r.size(),
                         " bytes is not a whole number of ", rb, "-byte rows"));
      }
      counts[l].push_back(static_cast<int64_t>(r.size()) / rb);
    }
  }
  if (!snap.windows.empty() && snap.windows.size() != snap.shapes.size()) {
    return absl::InvalidArgumentError("KV snapshot windows: wrong layers");
  }
  if (!snap.codebooks.empty()) {
    if (snap.codebooks.size() != snap.shapes.size()) {
      return absl::InvalidArgumentError("KV snapshot codebooks: wrong layers");
    }
    for (int32_t l = 0; l < cache.num_layers(); ++l) {
      if (static_cast<int32_t>(snap.codebooks[l].size()) !=
          cache.shape(l).n_kv_heads) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV snapshot codebooks of layer ", l, ": wrong KV heads"));
      }
      for (const std::string& b : snap.codebooks[l]) {
        if (b.empty()) continue;
        auto h = KvSnapshot::ParseCodebook(b, cache.shape(l));
        if (!h.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "KV snapshot layer ", l, ": ", h.status().message()));
        }
      }
    }
  }
  absl::Status st = kv.AppendPerHead(cache, counts);
  if (!st.ok()) return st;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    const int64_t rb = KvSnapshot::RowBytes(s);
    for (int32_t h = 0; h < s.n_kv_heads; ++h) {
      const char* p = snap.rows[l][h].data();
      for (int64_t i = 0; i < counts[l][h]; ++i) {
        const int64_t slot = kv.SlotOf(cache, l, h, i);
        std::memcpy(cache.pos_pool(l) + slot, p, 4);
        std::memcpy(cache.k_pool(l) + slot * s.d_qk, p + 4, 4 * s.d_qk);
        std::memcpy(cache.v_pool(l) + slot * s.d_vo, p + 4 + 4 * s.d_qk,
                    4 * s.d_vo);
        p += rb;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::worker
