// Launch decisions of the CUDA kernels (launch_plan.h).
#include "kernels/cuda/launch_plan.h"

#include <algorithm>

namespace latentkv::kernels::cuda {

MatMulPath ChooseMatMulPath(DType weights, int64_t n, int64_t rows,
                            int64_t cols) {
  if (n <= kGemvMaxRows) return MatMulPath::kGemv;
  switch (weights) {
    case DType::kF32:
      return MatMulPath::kCublasSgemm;
    case DType::kBF16:
      return rows % 8 == 0 && cols % 8 == 0 ? MatMulPath::kCublasLtBf16
                                            : MatMulPath::kTiled;
    default:
      return MatMulPath::kTiled;
  }
}

int64_t Bf16GemmActivationBytes(int64_t n, int64_t cols, bool split) {
  const int64_t act_rows = split ? 2 * n : n;
  // Padded to 256 bytes so the product starts aligned.
  return (act_rows * cols * 2 + 255) / 256 * 256;
}

int64_t Bf16GemmScratchBytes(int64_t n, int64_t rows, int64_t cols,
                             bool split) {
  return Bf16GemmActivationBytes(n, cols, split) +
         (split ? 2 * n * rows * 4 : 0);
}

int64_t AttentionSmemBytes(int32_t lanes, int32_t chunk, int32_t d_qk,
                           int32_t d_vo) {
  const int64_t floats = int64_t{lanes} * (d_qk + d_vo) +
                         int64_t{chunk} * (d_qk + 1 + d_vo) +
                         int64_t{lanes} * (chunk + 1) + 3 * int64_t{lanes};
  return floats * 4 + (int64_t{chunk} + lanes) * 4;
}

AttentionPlan PlanAttention(const AttentionShape& s,
                            const DeviceLimits& limits) {
  AttentionPlan plan;
  if (s.num_seqs <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.d_qk <= 0 ||
      s.d_vo <= 0 || s.page_size <= 0 || s.total_q <= 0 || s.max_q_rows <= 0 ||
      s.max_pages < 0) {
    plan.error = "attention shape has a non-positive size";
    return plan;
  }
  if (s.n_heads % s.n_kv_heads != 0) {
    plan.error = "n_heads is not a multiple of n_kv_heads";
    return plan;
  }
  AttentionLaunch& l = plan.launch;
  l.group = s.n_heads / s.n_kv_heads;
  if (l.group > kMaxLanes) {
    plan.error = "GQA group larger than 64 query heads per KV head";
    return plan;
  }
  l.chunk = std::min(kMaxChunk, s.page_size);
  l.rows_per_tile = std::max(1, std::min(s.max_q_rows, kMaxLanes / l.group));
  // Fewer rows per tile, then smaller chunks, until the block fits.
  while (AttentionSmemBytes(l.rows_per_tile * l.group, l.chunk, s.d_qk,
                            s.d_vo) > limits.max_smem_per_block) {
    if (l.rows_per_tile > 1) {
      l.rows_per_tile = (l.rows_per_tile + 1) / 2;
    } else if (l.chunk > 1) {
      l.chunk = (l.chunk + 1) / 2;
    } else {
      plan.error = "head dims too large for one block's shared memory";
      return plan;
    }
  }
  l.lanes = l.rows_per_tile * l.group;
  l.q_tiles = (s.max_q_rows + l.rows_per_tile - 1) / l.rows_per_tile;
  l.grid_x = int64_t{s.num_seqs} * s.n_kv_heads * l.q_tiles;
  l.threads = 128;
  // Split the KV lists when the blocks would not fill two waves of the SMs.
  const int64_t want = 2 * int64_t{std::max(1, limits.sm_count)};
  int64_t splits = (want + l.grid_x - 1) / l.grid_x;
  splits = std::min<int64_t>(
      splits, std::max<int64_t>(1, s.max_pages / kMinPagesPerSplit));
  l.splits = static_cast<int32_t>(std::clamp<int64_t>(splits, 1, kMaxSplits));
  l.smem_bytes = AttentionSmemBytes(l.lanes, l.chunk, s.d_qk, s.d_vo);
  l.partial_floats =
      l.splits > 1 ? int64_t{s.total_q} * s.n_heads * l.splits * (s.d_vo + 2)
                   : 0;
  return plan;
}

}  // namespace latentkv::kernels::cuda
