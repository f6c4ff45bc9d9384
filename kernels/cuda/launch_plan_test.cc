// Launch decisions of the CUDA kernels, checked on the CPU: the paths of the
// matrix products, and the attention partition's properties (fits the
// shared memory, covers every query row and every page exactly once, splits
// only when the batch does not fill the GPU, rejects what cannot run).
#include "kernels/cuda/launch_plan.h"

#include <vector>

#include "gtest/gtest.h"

namespace latentkv::kernels::cuda {
namespace {

TEST(MatMulPathTest, GemvUpToEightRowsThenPerDtype) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0,
                   DType::kQ4_0, DType::kQ4_1}) {
    for (int64_t n = 1; n <= 8; ++n) {
      EXPECT_EQ(ChooseMatMulPath(dt, n, 64, 64), MatMulPath::kGemv);
    }
  }
  EXPECT_EQ(ChooseMatMulPath(DType::kF32, 9, 33, 97), MatMulPath::kCublasSgemm);
  EXPECT_EQ(ChooseMatMulPath(DType::kBF16, 9, 4096, 4096),
            MatMulPath::kCublasLtBf16);
  // Rows of 97 bf16 values are not 16-byte aligned: the tiled kernel.
  EXPECT_EQ(ChooseMatMulPath(DType::kBF16, 9, 64, 97), MatMulPath::kTiled);
  EXPECT_EQ(ChooseMatMulPath(DType::kBF16, 9, 33, 96), MatMulPath::kTiled);
  EXPECT_EQ(ChooseMatMulPath(DType::kF16, 512, 64, 64), MatMulPath::kTiled);
  EXPECT_EQ(ChooseMatMulPath(DType::kQ4_1, 64, 64, 64), MatMulPath::kTiled);
}

TEST(MatMulPathTest, Bf16ScratchHoldsBothHalvesAndTheirProducts) {
  // 2n bf16 rows padded to 256 bytes, then 2n f32 product rows.
  EXPECT_EQ(Bf16GemmScratchBytes(9, 100, 64, true),
            (18 * 64 * 2 + 255) / 256 * 256 + 18 * 100 * 4);
  EXPECT_EQ(Bf16GemmScratchBytes(9, 100, 64, false),
            (9 * 64 * 2 + 255) / 256 * 256);
}

AttentionShape Shape(int32_t seqs, int32_t nh, int32_t nkv, int32_t d,
                     int32_t rows, int32_t pages) {
  return AttentionShape{seqs, nh, nkv, d, d, 16, seqs * rows, rows, pages};
}

TEST(AttentionPlanTest, SmemBytesCountsEveryArray) {
  // 4 lanes, 16 slots, d_qk 64, d_vo 32: q + acc, k (rows padded to 65) +
  // v, scores (rows padded to 17), m/l/corr, then int32 slot and query
  // positions.
  const int64_t floats = 4 * 96 + 16 * (65 + 32) + 4 * 17 + 3 * 4;
  EXPECT_EQ(AttentionSmemBytes(4, 16, 64, 32), floats * 4 + (16 + 4) * 4);
}

TEST(AttentionPlanTest, DecodeOfFewSequencesSplitsTheKv) {
  const DeviceLimits h100;
  // One sequence, 8k tokens (512 pages), Llama-3-8B's GQA (32 / 8).
  const AttentionPlan plan = PlanAttention(Shape(1, 32, 8, 128, 1, 512), h100);
  ASSERT_TRUE(plan.error.empty()) << plan.error;
  const AttentionLaunch& l = plan.launch;
  EXPECT_EQ(l.group, 4);
  EXPECT_EQ(l.rows_per_tile, 1);
  EXPECT_EQ(l.lanes, 4);
  EXPECT_EQ(l.grid_x, 8);
  // 8 blocks would leave most of 132 SMs idle: split to >= two waves.
  EXPECT_GT(l.splits, 1);
  EXPECT_GE(l.grid_x * l.splits, 2 * h100.sm_count);
  EXPECT_LE(l.splits, kMaxSplits);
  EXPECT_EQ(l.partial_floats, int64_t{1} * 32 * l.splits * (128 + 2));
  EXPECT_LE(l.smem_bytes, h100.max_smem_per_block);
}

TEST(AttentionPlanTest, LargeBatchOrShortContextDoesNotSplit) {
  const DeviceLimits h100;
  const AttentionPlan big = PlanAttention(Shape(64, 32, 8, 128, 1, 512), h100);
  ASSERT_TRUE(big.error.empty());
  EXPECT_EQ(big.launch.splits, 1);  // 512 blocks fill the GPU
  EXPECT_EQ(big.launch.partial_floats, 0);
  // Three pages cannot make two splits of kMinPagesPerSplit.
  const AttentionPlan short_ctx =
      PlanAttention(Shape(1, 32, 8, 128, 1, 3), h100);
  ASSERT_TRUE(short_ctx.error.empty());
  EXPECT_EQ(short_ctx.launch.splits, 1);
}

TEST(AttentionPlanTest, PrefillTilesCoverEveryQueryRow) {
  const DeviceLimits h100;
  for (int32_t rows : {1, 7, 16, 17, 2048}) {
    const AttentionPlan plan =
        PlanAttention(Shape(3, 32, 8, 128, rows, 128), h100);
    ASSERT_TRUE(plan.error.empty()) << plan.error;
    const AttentionLaunch& l = plan.launch;
    EXPECT_GE(int64_t{l.q_tiles} * l.rows_per_tile, rows);
    EXPECT_LT(int64_t{l.q_tiles - 1} * l.rows_per_tile, rows);
    EXPECT_LE(l.lanes, kMaxLanes);
    EXPECT_EQ(l.lanes, l.rows_per_tile * l.group);
    EXPECT_EQ(l.grid_x, int64_t{3} * 8 * l.q_tiles);
  }
}

TEST(AttentionPlanTest, ShrinksTilesToFitSharedMemory) {
  DeviceLimits small;
  small.max_smem_per_block = 48 << 10;
  // Gemma-like head dim 256, single KV head, 8 query heads, long prefill.
  const AttentionPlan plan = PlanAttention(Shape(1, 8, 1, 256, 512, 32), small);
  ASSERT_TRUE(plan.error.empty()) << plan.error;
  EXPECT_LE(plan.launch.smem_bytes, small.max_smem_per_block);
  EXPECT_EQ(plan.launch.smem_bytes,
            AttentionSmemBytes(plan.launch.lanes, plan.launch.chunk, 256, 256));
  EXPECT_LT(plan.launch.rows_per_tile, kMaxLanes / 8);
  EXPECT_LE(plan.launch.chunk, 16);  // never more than a page
}

TEST(AttentionPlanTest, RejectsWhatCannotRun) {
  const DeviceLimits h100;
  EXPECT_FALSE(PlanAttention(Shape(1, 12, 8, 64, 1, 4), h100).error.empty())
      << "12 heads on 8 KV heads";
  EXPECT_FALSE(PlanAttention(Shape(1, 128, 1, 64, 1, 4), h100).error.empty())
      << "a GQA group of 128";
  EXPECT_FALSE(PlanAttention(Shape(1, 8, 8, 1 << 16, 1, 4), h100).error.empty())
      << "head dim 65536";
  EXPECT_FALSE(PlanAttention(Shape(0, 8, 8, 64, 1, 4), h100).error.empty());
}

TEST(SplitPagesTest, SplitsCoverEveryPageExactlyOnce) {
  for (int32_t pages = 0; pages <= 70; ++pages) {
    for (int32_t splits = 1; splits <= kMaxSplits; ++splits) {
      std::vector<int> seen(pages, 0);
      int32_t prev_end = 0;
      for (int32_t s = 0; s < splits; ++s) {
        const PageRange r = SplitPages(pages, splits, s);
        ASSERT_LE(r.begin, r.end);
        ASSERT_EQ(r.begin, prev_end) << "ranges are contiguous, in order";
        prev_end = r.end;
        for (int32_t p = r.begin; p < r.end; ++p) ++seen[p];
      }
      ASSERT_EQ(prev_end, pages);
      for (int32_t p = 0; p < pages; ++p) ASSERT_EQ(seen[p], 1);
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels::cuda
