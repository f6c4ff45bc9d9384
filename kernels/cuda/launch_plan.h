// Host-side launch decisions of the CUDA kernels, in plain C++ so they are
// unit-tested on machines without a GPU (launch_plan_test.cc): which
// matrix-product path a (dtype, batch) takes, and the paged attention's
// work partition (query tiles, KV splits, shared memory, scratch sizes).
// No CUDA headers here; kernels/cuda/*.cu and cuda_backend.cc include it.
#ifndef LATENTKV_KERNELS_CUDA_LAUNCH_PLAN_H_
#define LATENTKV_KERNELS_CUDA_LAUNCH_PLAN_H_

#include <cstdint>
#include <string>

#include "common/dtype.h"

namespace latentkv::kernels::cuda {

// Inputs up to this many rows take the GEMV kernel (one pass over the
// weights for all rows; decode batches of one engine step per GEMV call).
inline constexpr int kGemvMaxRows = 8;

enum class MatMulPath {
  kGemv,          // our warp-per-row kernel, every dtype
  kCublasSgemm,   // f32 weights, n > kGemvMaxRows
  kCublasLtBf16,  // bf16 weights, n > kGemvMaxRows, rows and cols % 8 == 0
  kTiled,         // f16, block-quantized and unaligned bf16, n > kGemvMaxRows
};
// The path of y[n, rows] = x[n, cols] * W^T for W [rows, cols] in `weights`.
// cuBLASLt's bf16 kernels want 16-byte aligned rows, so bf16 matrices with
// rows or cols not a multiple of 8 take the tiled kernel.
MatMulPath ChooseMatMulPath(DType weights, int64_t n, int64_t rows,
                            int64_t cols);

// Scratch bytes of the bf16 cuBLASLt path: the activations as bf16 rows
// (2n with the hi/lo split, else n) and, with the split, the f32 products of
// both halves [2n, rows] before they are summed.
int64_t Bf16GemmScratchBytes(int64_t n, int64_t rows, int64_t cols, bool split);
// Of which the bf16 activations (padded to 256 bytes): the f32 products
// start at this offset.
int64_t Bf16GemmActivationBytes(int64_t n, int64_t cols, bool split);

// What the device offers a kernel launch.
struct DeviceLimits {
  int sm_count = 132;                      // H100 SXM
  int64_t max_smem_per_block = 227 << 10;  // opt-in dynamic shared memory
};

// One PagedAttention call (kernels/ops.h PagedAttentionArgs) as the host
// knows it: the shape and the plan hints.
struct AttentionShape {
  int32_t num_seqs = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t d_qk = 0;
  int32_t d_vo = 0;
  int32_t page_size = 0;
  int32_t total_q = 0;     // query rows in all
  int32_t max_q_rows = 0;  // most query rows of one sequence
  int32_t max_pages = 0;   // most pages of one (sequence, KV head) list
};

// The attention kernel's partition. A block owns one (sequence, KV head,
// query tile, KV split): `rows_per_tile` query rows of the sequence times
// the `group` query heads reading that KV head (its "lanes", each one
// query row of one head), attending to split `y` of the list's pages
// (pages divided into `splits` near-equal parts). KV slots are staged in
// shared memory `chunk` at a time. With splits > 1 every block writes an
// unnormalized partial (running max, sum, accumulator) and a second kernel
// merges the splits of each (row, head).
struct AttentionLaunch {
  int32_t group = 0;           // query heads per KV head
  int32_t rows_per_tile = 0;   // query rows per block
  int32_t lanes = 0;           // rows_per_tile * group
  int32_t q_tiles = 0;         // ceil(max_q_rows / rows_per_tile)
  int32_t chunk = 0;           // KV slots staged at once
  int32_t splits = 0;          // KV splits per (sequence, KV head, tile)
  int32_t threads = 0;         // per block
  int64_t grid_x = 0;          // num_seqs * n_kv_heads * q_tiles
  int64_t smem_bytes = 0;      // dynamic shared memory per block
  int64_t partial_floats = 0;  // scratch: total_q * n_heads * splits *
                               // (d_vo + 2) when splits > 1, else 0
};

#if defined(__CUDACC__)
#define LATENTKV_HOST_DEVICE __host__ __device__
#else
#define LATENTKV_HOST_DEVICE
#endif

// Pages [begin, end) (offsets into a list of `pages`) of split `split` of
// `splits`: ceil(pages / splits) each, the last ones shorter or empty. The
// kernel calls this; together the splits cover every page exactly once.
struct PageRange {
  int32_t begin = 0;
  int32_t end = 0;
};
LATENTKV_HOST_DEVICE inline PageRange SplitPages(int32_t pages, int32_t splits,
                                                 int32_t split) {
  const int32_t per = (pages + splits - 1) / splits;
  int32_t begin = split * per;
  if (begin > pages) begin = pages;
  const int32_t end = begin + per < pages ? begin + per : pages;
  return PageRange{begin, end};
}

// Largest lanes per block, and the default slots per stage.
inline constexpr int32_t kMaxLanes = 64;
inline constexpr int32_t kMaxChunk = 32;
// Fewest pages a split gets (below it the merge costs more than it saves).
inline constexpr int32_t kMinPagesPerSplit = 2;
inline constexpr int32_t kMaxSplits = 64;

// Shared memory of a block with this many lanes and chunk slots: the lanes'
// queries [lanes, d_qk] and accumulators [lanes, d_vo], a chunk of keys
// [chunk, d_qk + 1] (rows padded against bank conflicts) and values
// [chunk, d_vo], the scores [lanes, chunk + 1] (padded likewise), the
// running max, sum and correction [3 * lanes] (f32), and the chunk's slot
// positions and the lanes' query positions (int32).
int64_t AttentionSmemBytes(int32_t lanes, int32_t chunk, int32_t d_qk,
                           int32_t d_vo);

// The partition for `shape` on `limits`; `error` set (and the rest
// meaningless) when no partition fits: a GQA group above kMaxLanes, head
// dims whose one-lane block exceeds the shared memory, or an inconsistent
// shape (n_heads not a multiple of n_kv_heads, non-positive sizes).
struct AttentionPlan {
  AttentionLaunch launch;
  std::string error;
};
AttentionPlan PlanAttention(const AttentionShape& shape,
                            const DeviceLimits& limits);

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_LAUNCH_PLAN_H_
