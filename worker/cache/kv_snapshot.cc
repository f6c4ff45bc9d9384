#include "worker/cache/kv_snapshot.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

int64_t KvSnapshot::bytes() const {
  int64_t total = 0;
  for (const auto& layer : rows) {
    for (const std::string& r : layer) total += static_cast<int64_t>(r.size());
  }
  return total;
}

absl::StatusOr<KvSnapshot> ExportKv(const KvCache& cache,
                                    const SequenceKv& kv) {
  KvSnapshot snap;
  KvCache& mc = const_cast<KvCache&>(cache);
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    snap.shapes.push_back(s);
    snap.rows.emplace_back(s.n_kv_heads);
    const int64_t rb = KvSnapshot::RowBytes(s);
    for (int32_t h = 0; h < s.n_kv_heads; ++h) {
      if (kv.aux(l, h).tokens > 0) {
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
