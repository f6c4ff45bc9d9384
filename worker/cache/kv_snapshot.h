// A sequence's KV cache in transferable form (prefill -> decode transfer,
// worker/server/): for every (layer, KV head), the rows it holds in slot
// order, each row = int32 position, K [d_qk(layer)], V [d_vo(layer)] in the
// KV dtype as the pool stores them (little-endian, packed; fp8 values are
// relative to the sender's per-(layer, head) scales, which follow from the
// model's weights, so both sides have the same). Rows are the latent,
// post-eviction slots: what moves is n_kv * (d_qk + d_vo) values (+ a position)
// per token actually kept, per layer. SpindleKV's codebook layers also move
// their codebook entries in their compressed form (`codebooks`), not expanded
// to rows.
#ifndef LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_
#define LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/cache/kv_cache.h"

namespace latentkv::worker {

struct KvSnapshot {
  std::vector<LayerKvShape> shapes;            // [num_layers]
  DType dtype = DType::kF32;                   // of K and V in `rows`
  std::vector<std::vector<std::string>> rows;  // [layer][kv head] packed rows
  // Empty, or [layer][kv head]: the head's codebook entries (tokens a
  // codebook layer moved out of its page list; SequenceResidency exports and
  // imports them), "" for a head without any. A blob is
  //   int32 n_k, int32 n_v, int64 records (a 16-byte header), then
  //   f32 K codewords [n_k, d_qk] (unit norm, pre-RoPE),
  //   f32 V codewords [n_v, d_vo],
  //   records [records] x (int32 position, int32 K index, f32 K magnitude,
  //                        int32 V index, f32 V magnitude).
  // Attention sees a head's codebook tokens before its rows.
  std::vector<std::vector<std::string>> codebooks;
  // Empty, or [layer]: the residency policy's window of the latest queries
  // (SequenceResidency), "" for a layer without one: int32 count, int32 next,
  // f32 q [count, n_heads, d_qk], int32 positions [count]. The window is a
  // ring of `window` slots: sent whole once full (count == window), else its
  // slots [0, count) (then next == count). The decode side scores its next
  // evictions with it, exactly as the prefill side would have.
  std::vector<std::string> windows;

  // Bytes of one row of a layer of shape `s` with K/V in `dtype`.
  static int64_t RowBytes(const LayerKvShape& s, DType dtype) {
    return KvRowBytes(dtype, s.d_qk, s.d_vo);
  }
  int64_t row_bytes(int32_t layer) const {
    return RowBytes(shapes[layer], dtype);
  }
  struct CodebookHeader {
    int32_t n_k = 0, n_v = 0;
    int64_t records = 0;
  };
  static constexpr int64_t kCodebookHeaderBytes = 16;
  static constexpr int64_t kCodebookRecordBytes = 20;
  // The blob's header, checked against its size for a layer of shape `s`.
  // DataLoss for a short, oversized or negative-count blob.
  static absl::StatusOr<CodebookHeader> ParseCodebook(const std::string& blob,
                                                      const LayerKvShape& s);
  bool has_codebooks() const;
  // Codebook entries or query windows: state for SequenceResidency.
  bool has_residency_state() const;
  // Tokens held per layer and head: rows plus codebook records.
  int64_t tokens(int32_t layer, int32_t head) const;
  int64_t bytes() const;
  // DataLoss naming the first (layer, head, row) whose K or V holds a NaN
  // or an infinity (fp8: its NaN code), or whose rows are not whole; OK
  // otherwise. Rows from another process (a prefill worker, the kvstore)
  // pass this before they are imported: a corrupt or hostile peer's values
  // must not reach attention, where one NaN spreads to every token.
  absl::Status CheckRows() const;
};

// ExportKv / ImportKv move a sequence's rows out of and into the pools:
// worker/kv/kv_io.h.

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_
