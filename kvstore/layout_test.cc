#include "kvstore/layout.h"

#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::kvstore {
namespace {

using ::testing::HasSubstr;

KvLayout TwoLayers() {
  KvLayout l;
  l.model_id = "m";
  l.num_layers = 2;
  l.num_kv_heads = 4;
  l.d_qk = {32, 16};
  l.d_vo = {64, 32};
  l.dtype = "f32";
  l.block_tokens = 16;
  l.codec = "raw";
  l.tp_size = 2;
  l.tp_rank = 1;
  return l;
}

TEST(LayoutTest, ValidLayoutPasses) {
  EXPECT_TRUE(ValidateLayout(TwoLayers()).ok());
  EXPECT_TRUE(CheckSameLayout(TwoLayers(), TwoLayers()).ok());
}

TEST(LayoutTest, InvalidLayoutsNameTheField) {
  struct Case {
    std::function<void(KvLayout&)> mutate;
    std::string field;
  };
  const Case cases[] = {
      {[](KvLayout& l) { l.num_layers = 0; }, "num_layers"},
      {[](KvLayout& l) { l.num_kv_heads = 0; }, "num_kv_heads"},
      {[](KvLayout& l) { l.d_qk = {32}; }, "d_qk"},
      {[](KvLayout& l) {
         l.d_vo = {64, 32, 1};
       },
       "d_vo"},
      {[](KvLayout& l) { l.d_qk[1] = 0; }, "d_qk[1]"},
      {[](KvLayout& l) { l.d_vo[0] = 0; }, "d_vo[0]"},
      {[](KvLayout& l) { l.dtype = ""; }, "dtype"},
      {[](KvLayout& l) { l.block_tokens = 0; }, "block_tokens"},
      {[](KvLayout& l) { l.codec = ""; }, "codec"},
      {[](KvLayout& l) { l.nope_dims = {0}; }, "nope_dims has 1 entries"},
      {[](KvLayout& l) {
         l.nope_dims = {0, 17};
       },
       "nope_dims[1] 17 > d_qk 16"},
      {[](KvLayout& l) { l.tp_size = 0; }, "tp_size"},
      {[](KvLayout& l) { l.tp_rank = 2; }, "tp_rank"},
  };
  for (const Case& c : cases) {
    KvLayout l = TwoLayers();
    c.mutate(l);
    const absl::Status s = ValidateLayout(l);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(s.message(), HasSubstr(c.field));
  }
}

TEST(LayoutTest, MismatchNamesEachField) {
  struct Case {
    std::function<void(KvLayout&)> mutate;
    std::string expect;
  };
  const Case cases[] = {
      {[](KvLayout& l) { l.model_id = "other"; },
       "model_id is \"other\", store holds \"m\""},
      {[](KvLayout& l) { l.num_layers = 3; }, "num_layers is 3"},
      {[](KvLayout& l) { l.num_kv_heads = 8; }, "num_kv_heads is 8"},
      {[](KvLayout& l) { l.d_qk[1] = 8; }, "d_qk[1] is 8, store holds 16"},
      {[](KvLayout& l) { l.d_qk.push_back(1); }, "d_qk.size is 3"},
      {[](KvLayout& l) { l.d_vo[0] = 16; }, "d_vo[0] is 16, store holds 64"},
      {[](KvLayout& l) { l.dtype = "bf16"; }, "dtype is \"bf16\""},
      {[](KvLayout& l) { l.block_tokens = 32; }, "block_tokens is 32"},
      {[](KvLayout& l) { l.codec = "spindle"; }, "codec is \"spindle\""},
      {[](KvLayout& l) { l.tp_size = 4; }, "tp_size is 4"},
      {[](KvLayout& l) { l.tp_rank = 0; }, "tp_rank is 0, store holds 1"},
      // Keys rotated under another partial-rotary split.
      {[](KvLayout& l) {
         l.nope_dims = {0, 8};
       },
       "nope_dims[1] is 8, store holds 0"},
  };
  for (const Case& c : cases) {
    KvLayout l = TwoLayers();
    c.mutate(l);
    const absl::Status s = CheckSameLayout(TwoLayers(), l);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << c.expect;
    EXPECT_THAT(s.message(), HasSubstr(c.expect));
  }
}

// An all-zero nope_dims list means what the empty one does (every key
// channel rotary), whichever side spells it.
TEST(LayoutTest, AllZeroNopeDimsEqualsEmpty) {
  KvLayout zeros = TwoLayers();
  zeros.nope_dims = {0, 0};
  EXPECT_TRUE(ValidateLayout(zeros).ok());
  EXPECT_TRUE(CheckSameLayout(TwoLayers(), zeros).ok());
  EXPECT_TRUE(CheckSameLayout(zeros, TwoLayers()).ok());
  KvLayout partial = TwoLayers();
  partial.nope_dims = {16, 0};
  EXPECT_TRUE(ValidateLayout(partial).ok());
  EXPECT_FALSE(CheckSameLayout(partial, TwoLayers()).ok());
  EXPECT_THAT(LayoutDebugString(partial), HasSubstr("nope_dims=[16,0]"));
}

TEST(LayoutTest, DebugStringMentionsDims) {
  EXPECT_THAT(LayoutDebugString(TwoLayers()), HasSubstr("d_qk=[32,16]"));
}

}  // namespace
}  // namespace latentkv::kvstore
