// The step plan is pure host logic over the page table: no pools, no KV
// memory, no kernels.
#include "worker/engine/step_plan.h"

#include <vector>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

std::unique_ptr<KvCache> MakeCache() {
  // Two layers of different latent dims, 2 KV heads, pages of 3 slots.
  return std::move(*KvCache::Create({{.n_kv_heads = 2, .d_qk = 4, .d_vo = 6},
                                     {.n_kv_heads = 2, .d_qk = 2, .d_vo = 2}},
                                    {.page_size = 3, .max_bytes = 1 << 16}));
}

TEST(StepPlanTest, DescribesEveryLayerOfTheBatch) {
  auto cache = MakeCache();
  SequenceKv a, b;
  a.Init(*cache);
  b.Init(*cache);
  // `a` already holds 4 tokens (a decode step follows); `b` is a new prompt.
  ASSERT_TRUE(a.Reserve(*cache, 5).ok());
  std::vector<int64_t> ignored(4 * 2);
  for (int32_t l = 0; l < 2; ++l) a.Append(*cache, l, 4, ignored.data(), 0);
  ASSERT_TRUE(b.Reserve(*cache, 7).ok());
  const std::vector<int32_t> ta = {11}, tb = {1, 2, 3, 4, 5, 6, 7};
  std::vector<ForwardChunk> chunks = {
      {&a, ta.data(), 1, 4, ForwardChunk::Logits::kLast},
      {&b, tb.data(), 7, 0, ForwardChunk::Logits::kAll}};
  StepPlan p;
  ASSERT_TRUE(BuildStepPlan(chunks, *cache, 100, 64, &p).ok());
  EXPECT_EQ(p.num_tokens, 8);
  EXPECT_EQ(p.num_seqs, 2);
  EXPECT_EQ(std::vector<int32_t>(p.at(p.tokens), p.at(p.tokens) + 8),
            (std::vector<int32_t>{11, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(std::vector<int32_t>(p.at(p.positions), p.at(p.positions) + 8),
            (std::vector<int32_t>{4, 0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(std::vector<int32_t>(p.at(p.q_indptr), p.at(p.q_indptr) + 3),
            (std::vector<int32_t>{0, 1, 8}));
  ASSERT_EQ(p.logit_rows, 8);  // a's last row, then all 7 of b's
  EXPECT_EQ(std::vector<int32_t>(p.at(p.logit_row), p.at(p.logit_row) + 8),
            (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  for (int32_t l = 0; l < 2; ++l) {
    const StepPlan::Layer& pl = p.layers[l];
    // Slots: token t of a sequence at logical index i lives in page
    // list[i / 3], offset i % 3.
    for (int32_t h = 0; h < 2; ++h) {
      EXPECT_EQ(p.slots[pl.slots + 0 * 2 + h], a.SlotOf(*cache, l, h, 4));
      for (int32_t t = 0; t < 7; ++t) {
        EXPECT_EQ(p.slots[pl.slots + (1 + t) * 2 + h],
                  int64_t{b.page_at(l, h, t / 3)} * 3 + t % 3);
      }
    }
    // Page tables: 5 tokens of `a` (2 pages, 2 in the last), 7 of `b`
    // (3 pages, 1 in the last), per head.
    const int32_t* indptr = p.at(pl.kv_indptr);
    const int32_t* last = p.at(pl.kv_last);
    EXPECT_EQ(std::vector<int32_t>(indptr, indptr + 5),
              (std::vector<int32_t>{0, 2, 4, 7, 10}));
    EXPECT_EQ(std::vector<int32_t>(last, last + 4),
              (std::vector<int32_t>{2, 2, 1, 1}));
    const int32_t* pages = p.at(pl.kv_indices);
    EXPECT_EQ(pages[0], a.page_at(l, 0, 0));
    EXPECT_EQ(pages[3], a.page_at(l, 1, 1));
    EXPECT_EQ(pages[9], b.page_at(l, 1, 2));
    EXPECT_FALSE(pl.any_codebook);
    // The launch hint: b's 7 tokens take 3 pages of 3 slots per head.
    EXPECT_EQ(pl.max_pages, 3);
  }
  EXPECT_EQ(p.max_q_rows, 7);                             // b's chunk
  EXPECT_EQ(p.logit_greedy, std::vector<uint8_t>(8, 0));  // none greedy
  EXPECT_TRUE(a.positions_dense(0, 0));
  a.Release(*cache);
  b.Release(*cache);
}

TEST(StepPlanTest, RefusesBadBatchesBeforeAppendingAnything) {
  auto cache = MakeCache();
  SequenceKv a;
  a.Init(*cache);
  ASSERT_TRUE(a.Reserve(*cache, 3).ok());
  StepPlan p;
  const std::vector<int32_t> bad = {1, 100, 2};
  EXPECT_EQ(BuildStepPlan({{&a, bad.data(), 3, 0}}, *cache, 100, 64, &p).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_EQ(BuildStepPlan({{&a, ok.data(), 3, 62}}, *cache, 100, 64, &p).code(),
            absl::StatusCode::kInvalidArgument);  // positions 62..64 > 64
  EXPECT_EQ(BuildStepPlan({}, *cache, 100, 64, &p).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.num_tokens(0, 0), 0);
  EXPECT_EQ(a.num_tokens(1, 1), 0);
  // A chunk that does not start where its sequence's slots end makes the
  // table stop calling its positions dense.
  ASSERT_TRUE(BuildStepPlan({{&a, ok.data(), 3, 5}}, *cache, 100, 64, &p).ok());
  EXPECT_FALSE(a.positions_dense(0, 0));
  a.Release(*cache);
}

}  // namespace
}  // namespace latentkv::worker
