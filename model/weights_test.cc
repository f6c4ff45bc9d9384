#include "model/weights.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/safetensors.h"

namespace latentkv::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelConfig TinyConfig() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 48;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.vocab_size = 300;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  c.qk_head_dim = {16, 16, 16, 16};
  c.vo_head_dim = {16, 16, 16, 16};
  return c;
}

std::string NewDir(const std::string& name) {
  const std::string dir = testing::TempDir() + "/weights_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Rewrites `<dir>/model.safetensors` through `edit`, which may drop or
// replace entries of the writer it is given.
using Edit = std::function<void(const SafetensorsFile&, SafetensorsWriter&)>;
void Rewrite(const std::string& dir, const std::vector<std::string>& drop,
             const Edit& edit) {
  const std::string path = dir + "/model.safetensors";
  SafetensorsWriter w;
  {
    auto f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    for (const auto& [name, e] : (*f)->tensors()) {
      bool dropped = false;
      for (const auto& d : drop) dropped = dropped || d == name;
      if (!dropped) w.Add(name, e.dtype, e.shape, e.data);
    }
    if (edit) edit(**f, w);
  }
  ASSERT_TRUE(w.Write(path).ok());
}

TEST(DefaultRopeInvFreqTest, StandardAndFrequencyAware) {
  ModelConfig c = TinyConfig();
  c.qk_head_dim = {8, 16, 16, 16};
  c.rope_theta = 10000.0;
  std::vector<float> inv = DefaultRopeInvFreq(c, 0);
  ASSERT_EQ(inv.size(), 4u);
  for (int j = 0; j < 4; ++j) {
    EXPECT_FLOAT_EQ(inv[j],
                    static_cast<float>(std::pow(10000.0, -2.0 * j / 8)));
  }
  c.rope_scheme = RopeScheme::kFrequencyAware;
  inv = DefaultRopeInvFreq(c, 0);
  // d = 8: e = concat(arange(2, 6, 2), arange(6, 8)) / 8 = [2, 4, 6, 7] / 8.
  const double e[] = {2, 4, 6, 7};
  ASSERT_EQ(inv.size(), 4u);
  for (int j = 0; j < 4; ++j) {
    EXPECT_FLOAT_EQ(inv[j], static_cast<float>(std::pow(10000.0, -e[j] / 8)));
  }
  inv = DefaultRopeInvFreq(c, 1);
  // d = 16: [4, 6, 8, 10, 12, 13, 14, 15] / 16.
  const double e16[] = {4, 6, 8, 10, 12, 13, 14, 15};
  ASSERT_EQ(inv.size(), 8u);
  for (int j = 0; j < 8; ++j) {
    EXPECT_FLOAT_EQ(inv[j],
                    static_cast<float>(std::pow(10000.0, -e16[j] / 16)));
  }
}

TEST(LoadModelTest, LoadsSyntheticF32ZeroCopy) {
  const std::string dir = NewDir("f32");
  ModelConfig c = TinyConfig();
  c.qk_head_dim = {16, 8, 8, 4};
  c.vo_head_dim = {16, 12, 4, 8};
  c.tie_word_embeddings = false;
  ASSERT_TRUE(WriteSyntheticModel(c, dir, DType::kF32, 7).ok());
  auto w = LoadModel(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelWeights& m = **w;
  EXPECT_EQ(m.config.qk_head_dim, c.qk_head_dim);
  EXPECT_THAT(m.embed_tokens.shape, ElementsAre(300, 64));
  EXPECT_TRUE(m.embed_tokens.owned.empty());  // a view into the mapping
  EXPECT_THAT(m.lm_head.shape, ElementsAre(300, 64));
  EXPECT_NE(m.lm_head.data, m.embed_tokens.data);
  ASSERT_EQ(m.layers.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    const LayerWeights& lw = m.layers[l];
    EXPECT_THAT(lw.q_proj.shape, ElementsAre(4 * c.qk_head_dim[l], 64));
    EXPECT_THAT(lw.k_proj.shape, ElementsAre(2 * c.qk_head_dim[l], 64));
    EXPECT_THAT(lw.v_proj.shape, ElementsAre(2 * c.vo_head_dim[l], 64));
    EXPECT_THAT(lw.o_proj.shape, ElementsAre(64, 4 * c.vo_head_dim[l]));
    EXPECT_THAT(lw.gate_proj.shape, ElementsAre(48, 64));
    EXPECT_THAT(lw.up_proj.shape, ElementsAre(48, 64));
    EXPECT_THAT(lw.down_proj.shape, ElementsAre(64, 48));
    EXPECT_EQ(lw.q_proj.dtype, DType::kF32);
    EXPECT_EQ(lw.attn_norm.dtype, DType::kF32);
    EXPECT_FALSE(lw.attn_norm.owned.empty());
    EXPECT_EQ(lw.attn_norm.f32()[5], 1.0f);
    EXPECT_EQ(lw.ffn_norm.f32()[63], 1.0f);
    EXPECT_EQ(lw.rope_inv_freq, DefaultRopeInvFreq(m.config, l));
  }
  EXPECT_EQ(m.final_norm.f32()[0], 1.0f);
  // Random normal with std 0.02.
  double sum = 0, sq = 0;
  const int64_t n = m.embed_tokens.numel();
  for (int64_t i = 0; i < n; ++i) {
    sum += m.embed_tokens.f32()[i];
    sq += m.embed_tokens.f32()[i] * m.embed_tokens.f32()[i];
  }
  EXPECT_NEAR(sum / n, 0.0, 1e-3);
  EXPECT_NEAR(std::sqrt(sq / n), 0.02, 1e-3);
}

TEST(LoadModelTest, ConvertsDtypesAndTiesEmbeddings) {
  const std::string dir = NewDir("bf16");
  ASSERT_TRUE(WriteSyntheticModel(TinyConfig(), dir, DType::kBF16, 3).ok());
  auto f32 = LoadModel(dir, {.matrix_dtype = DType::kF32});
  ASSERT_TRUE(f32.ok()) << f32.status();
  auto bf16 = LoadModel(dir, {.matrix_dtype = DType::kBF16});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  auto f16 = LoadModel(dir, {.matrix_dtype = DType::kF16});
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_EQ((*f32)->embed_tokens.dtype, DType::kF32);
  EXPECT_FALSE((*f32)->embed_tokens.owned.empty());
  EXPECT_EQ((*bf16)->embed_tokens.dtype, DType::kBF16);
  EXPECT_TRUE((*bf16)->embed_tokens.owned.empty());
  EXPECT_EQ((*f16)->layers[2].k_proj.dtype, DType::kF16);
  // Tied: the head is a view of the embedding.
  for (const auto* m : {f32->get(), bf16->get(), f16->get()}) {
    EXPECT_EQ(m->lm_head.data, m->embed_tokens.data);
    EXPECT_TRUE(m->lm_head.owned.empty());
    EXPECT_EQ(m->lm_head.dtype, m->embed_tokens.dtype);
    EXPECT_EQ(m->lm_head.shape, m->embed_tokens.shape);
    EXPECT_EQ(m->layers[0].attn_norm.dtype, DType::kF32);
  }
  // Values agree across dtypes.
  const Tensor& a = (*f32)->layers[1].q_proj;
  const Tensor& b = (*bf16)->layers[1].q_proj;
  const Tensor& h = (*f16)->layers[1].q_proj;
  std::vector<float> bv(b.numel()), hv(h.numel());
  ConvertToF32(b.data, DType::kBF16, b.numel(), bv.data());
  ConvertToF32(h.data, DType::kF16, h.numel(), hv.data());
  for (int64_t i = 0; i < a.numel(); ++i) {
    ASSERT_EQ(a.f32()[i], bv[i]);
    ASSERT_NEAR(hv[i], bv[i], 1e-3 * std::abs(bv[i]) + 1e-7);
  }
}

TEST(LoadModelTest, MissingTensorIsNamed) {
  const std::string dir = NewDir("missing");
  ASSERT_TRUE(WriteSyntheticModel(TinyConfig(), dir, DType::kF32, 1).ok());
  Rewrite(dir, {"model.layers.2.mlp.up_proj.weight"}, nullptr);
  auto w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(),
              HasSubstr("model.layers.2.mlp.up_proj.weight: missing tensor"));
}

TEST(LoadModelTest, UntiedNeedsLmHead) {
  const std::string dir = NewDir("untied");
  ModelConfig c = TinyConfig();
  c.tie_word_embeddings = false;
  ASSERT_TRUE(WriteSyntheticModel(c, dir, DType::kF32, 1).ok());
  Rewrite(dir, {"lm_head.weight"}, nullptr);
  auto w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("lm_head.weight"));
}

TEST(LoadModelTest, WrongShapeIsNamed) {
  const std::string dir = NewDir("shape");
  ASSERT_TRUE(WriteSyntheticModel(TinyConfig(), dir, DType::kF32, 1).ok());
  Rewrite(dir, {"model.layers.3.self_attn.k_proj.weight"},
          [](const SafetensorsFile&, SafetensorsWriter& w) {
            std::vector<float> x(64 * 64, 0.5f);
            w.AddF32("model.layers.3.self_attn.k_proj.weight", DType::kF32,
                     {64, 64}, x.data());
          });
  auto w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(),
              HasSubstr("model.layers.3.self_attn.k_proj.weight: expected "
                        "shape [32, 64], got [64, 64]"));
}

TEST(LoadModelTest, InconsistentConfig) {
  const std::string dir = NewDir("config");
  ASSERT_TRUE(WriteSyntheticModel(TinyConfig(), dir, DType::kF32, 1).ok());
  {
    std::ofstream out(dir + "/config.json", std::ios::trunc);
    out << R"({"hidden_size": 64, "intermediate_size": 48,
      "num_hidden_layers": 4, "num_attention_heads": 4,
      "num_key_value_heads": 3, "vocab_size": 300})";
  }
  auto w = LoadModel(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("num_key_value_heads"));
  std::filesystem::remove(dir + "/config.json");
  EXPECT_EQ(LoadModel(dir).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadModel(NewDir("empty")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LoadModelTest, RotaryInvFreqTensorOverrides) {
  const std::string dir = NewDir("invfreq");
  ASSERT_TRUE(WriteSyntheticModel(TinyConfig(), dir, DType::kF32, 1).ok());
  const std::vector<float> table = {1.0f,    0.5f,  0.25f,  0.125f,
                                    0.0625f, 0.01f, 0.001f, 1e-4f};
  Rewrite(dir, {}, [&](const SafetensorsFile&, SafetensorsWriter& w) {
    w.AddF32("model.layers.1.self_attn.rotary_inv_freq", DType::kF32, {8},
             table.data());
  });
  auto w = LoadModel(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->layers[1].rope_inv_freq, table);
  EXPECT_EQ((*w)->layers[0].rope_inv_freq, DefaultRopeInvFreq((*w)->config, 0));

  Rewrite(dir, {"model.layers.1.self_attn.rotary_inv_freq"},
          [&](const SafetensorsFile&, SafetensorsWriter& w) {
            w.AddF32("model.layers.1.self_attn.rotary_inv_freq", DType::kF32,
                     {4}, table.data());
          });
  auto bad = LoadModel(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("model.layers.1.self_attn.rotary_inv_freq: expected "
                        "shape [8], got [4]"));
}

}  // namespace
}  // namespace latentkv::model
