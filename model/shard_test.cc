// Tensor-parallel shards of k-quant weights: row-parallel matrices (o_proj,
// down_proj) are cut along their columns in whole 256-element super-blocks
// (DTypeBlockElems), and a cut through a super-block is refused by name.
#include "model/shard.h"

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/weights.h"

namespace latentkv::model {
namespace {

// hidden 256, 16 heads of 64 (o_proj 256 x 1024), MLP 512 (down_proj
// 256 x 512), matrices quantized to `dtype` at load.
std::shared_ptr<const ModelWeights> Model(DType dtype) {
  ModelConfig c;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = 16;
  c.num_kv_heads = 4;
  c.vocab_size = 32;
  c.max_position_embeddings = 32;
  c.qk_head_dim = {64, 64};
  c.vo_head_dim = {64, 64};
  std::string dir = "/tmp/latentkv-shard-XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  EXPECT_TRUE(WriteSyntheticModel(c, dir, DType::kF32, 9).ok());
  LoadOptions o;
  o.matrix_dtype = dtype;
  auto w = LoadModel(dir, o);
  EXPECT_TRUE(w.ok()) << w.status();
  std::filesystem::remove_all(dir);
  return std::shared_ptr<const ModelWeights>(std::move(*w));
}

std::vector<float> Values(const Tensor& t) {
  std::vector<float> v(t.numel());
  ConvertToF32(t.data, t.dtype, t.numel(), v.data());
  return v;
}

// Each rank's columns of a row-parallel matrix, value for value.
void ExpectColumns(const Tensor& full, const Tensor& part, int rank) {
  const int64_t rows = full.shape[0], cols = full.shape[1];
  const int64_t w = part.shape[1];
  ASSERT_EQ(part.shape[0], rows);
  const std::vector<float> a = Values(full), b = Values(part);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < w; ++c) {
      ASSERT_EQ(b[r * w + c], a[r * cols + rank * w + c])
          << "rank " << rank << " row " << r << " col " << c;
    }
  }
}

TEST(ShardKQuantTest, RowParallelCutsAreWholeSuperBlocks) {
  for (DType d : {DType::kQ4_K, DType::kQ6_K, DType::kQ2_K}) {
    SCOPED_TRACE(std::string(DTypeName(d)));
    const auto full = Model(d);
    ASSERT_EQ(full->layers[0].o_proj.dtype, d);
    // TP 2: o_proj slices of 512 columns (2 super-blocks), down_proj 256.
    for (int rank = 0; rank < 2; ++rank) {
      auto s = ShardForTensorParallel(full, rank, 2);
      ASSERT_TRUE(s.ok()) << s.status();
      const LayerWeights& l = (*s)->layers[1];
      EXPECT_EQ(l.o_proj.dtype, d);
      EXPECT_EQ(l.o_proj.shape, (std::vector<int64_t>{256, 512}));
      EXPECT_EQ(l.down_proj.shape, (std::vector<int64_t>{256, 256}));
      ExpectColumns(full->layers[1].o_proj, l.o_proj, rank);
      ExpectColumns(full->layers[1].down_proj, l.down_proj, rank);
      // Column-parallel matrices: whole rows.
      EXPECT_EQ(l.gate_proj.shape, (std::vector<int64_t>{256, 256}));
    }
    // TP 4: o_proj slices of 256 columns are one super-block each, but
    // down_proj slices of 128 would cut its super-blocks in half.
    auto bad = ShardForTensorParallel(full, 0, 4);
    ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(
                  "down_proj slices of 128 columns are not whole " +
                  std::string(DTypeName(d)) + " blocks of 256"),
              std::string::npos)
        << bad.status();
  }
}

// The same model in q5_0 (32-element blocks) shards at TP 4.
TEST(ShardKQuantTest, ThirtyTwoElementBlocksCutFiner) {
  auto s = ShardForTensorParallel(Model(DType::kQ5_0), 3, 4);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->layers[0].down_proj.shape, (std::vector<int64_t>{256, 128}));
}

}  // namespace
}  // namespace latentkv::model
