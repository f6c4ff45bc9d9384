#include "worker/kv/kv_io.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::StatusOr<KvSnapshot> ExportKv(const KvCache& cache, KvPools& pools,
                                    const SequenceKv& kv, bool with_codebooks) {
  KvSnapshot snap;
  snap.dtype = cache.dtype();
  std::vector<int64_t> slots;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    snap.shapes.push_back(s);
    snap.rows.emplace_back(s.n_kv_heads);
    for (int32_t h = 0; h < s.n_kv_heads; ++h) {
      if (kv.aux(l, h).tokens > 0 && !with_codebooks) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", l, " holds codebook entries, which have no row form"));
      }
      const int64_t n = kv.num_tokens(l, h);
      slots.resize(n);
      for (int64_t i = 0; i < n; ++i) slots[i] = kv.SlotOf(cache, l, h, i);
      absl::Status st = pools.ReadRows(l, slots, &snap.rows[l][h]);
      if (!st.ok()) return st;
    }
  }
  return snap;
}

absl::Status ImportKv(KvCache& cache, KvPools& pools, SequenceKv& kv,
                      const KvSnapshot& snap) {
  if (static_cast<int32_t>(snap.shapes.size()) != cache.num_layers() ||
      snap.rows.size() != snap.shapes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV snapshot has ", snap.shapes.size(),
                     " layers, this cache ", cache.num_layers()));
  }
  if (snap.dtype != cache.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV snapshot rows are ", std::string(DTypeName(snap.dtype)),
        ", this cache holds ", std::string(DTypeName(cache.dtype()))));
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
    const int64_t rb = snap.row_bytes(l);
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
  std::vector<int64_t> slots;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const int64_t rb = snap.row_bytes(l);
    for (int32_t h = 0; h < cache.shape(l).n_kv_heads; ++h) {
      const std::string& rows = snap.rows[l][h];
      slots.resize(counts[l][h]);
      bool dense = true;
      for (int64_t i = 0; i < counts[l][h]; ++i) {
        slots[i] = kv.SlotOf(cache, l, h, i);
        int32_t p;
        std::memcpy(&p, rows.data() + i * rb, 4);
        dense = dense && p == i;
      }
      st = pools.WriteRows(l, slots, rows.data(), rows.size());
      if (!st.ok()) {
        kv.Release(cache);
        return st;
      }
      if (dense) kv.set_positions_dense(l, h);
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::worker
