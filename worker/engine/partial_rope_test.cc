// Partial rotary (config rope_dims: KV-Latent's position-free key dims) in
// the engine, on synthetic weights with a different split per layer (4 of
// 8 channels rotary, none, 6 of 8), on every registered backend (cuda
// instances carry the gpu label):
// - against the independent float64 reference, prefilled whole, in chunks,
//   and decoded step by step;
// - against a second model that is the same function written differently:
//   fully rotary, q/k rows permuted so that the rotary pairs come first and
//   every position-free channel pair gets inverse frequency 0 (a rotation by
//   0 is the identity). Its logits must equal the partial model's;
// - through codebook residency with theta 1 (keys un-roped, stored and
//   re-roped with the layer's table), which must change no logit.
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/safetensors.h"
#include "worker/engine/edited_tensors_for_tests.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/reference_forward_for_tests.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::worker {
namespace {

using model::ModelConfig;

constexpr int kVocab = 61;
constexpr int kHeadDim = 8;

ModelConfig PartialConfig() {
  ModelConfig c = ModelConfig::Llama(/*hidden=*/32, /*intermediate=*/48,
                                     /*layers=*/3, /*heads=*/4, /*kv_heads=*/2,
                                     kVocab, /*context=*/128, 500.0);
  c.rope_dims = {4, 0, 6};
  return c;
}

std::string TempRoot() {
  std::string root = "/tmp/latentkv-partial-rope-XXXXXX";
  EXPECT_NE(mkdtemp(root.data()), nullptr);
  return root;
}

std::shared_ptr<const model::ModelWeights> Load(const std::string& dir) {
  auto m = model::LoadModel(dir);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::shared_ptr<const model::ModelWeights>(std::move(*m));
}

// The partial model: synthetic weights (scaled up so attention is sharp and
// RoPE matters), the config's default tables (base^(-2j/rope_dims)).
std::shared_ptr<const model::ModelWeights> PartialModel(
    const std::string& dir) {
  EXPECT_TRUE(
      model::WriteSyntheticModel(PartialConfig(), dir, DType::kF32, 7).ok());
  const std::string st = dir + "/model.safetensors";
  EXPECT_TRUE(EditedTensors(st,
                            [](const std::string& name, const auto&,
                               std::vector<float>* v) {
                              if (name.find("norm") != std::string::npos)
                                return;
                              for (float& x : *v) x *= 10;
                            })
                  .Write(st)
                  .ok());
  return Load(dir);
}

// The same function as `p`, fully rotary: head channel f of the new model is
// channel src[f] of p's, with pair j < r/2 = p's rotary pair j (its
// frequency) and the other pairs p's position-free channels (frequency 0).
std::shared_ptr<const model::ModelWeights> FullyRotaryTwin(
    const model::ModelWeights& p, const std::string& pdir,
    const std::string& dir) {
  ModelConfig c = p.config;
  c.rope_dims.clear();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << c.ToJson();
  const int half = kHeadDim / 2;
  std::vector<std::vector<float>> inv(c.num_layers);
  model::SafetensorsWriter w = EditedTensors(
      pdir + "/model.safetensors",
      [&](const std::string& name, const std::vector<int64_t>& shape,
          std::vector<float>* v) {
        const bool qk = name.find("q_proj") != std::string::npos ||
                        name.find("k_proj") != std::string::npos;
        if (qk) {
          const int l = std::stoi(name.substr(name.find("layers.") + 7));
          const int r = p.config.rope_dim(l);
          std::vector<int> src(kHeadDim);
          for (int j = 0; j < half; ++j) {
            if (j < r / 2) {
              src[j] = j;
              src[j + half] = j + r / 2;
            } else {
              src[j] = r + 2 * (j - r / 2);
              src[j + half] = r + 2 * (j - r / 2) + 1;
            }
          }
          const int64_t cols = shape[1];
          std::vector<float> out(v->size());
          for (int64_t row = 0; row < shape[0]; ++row) {
            const int64_t head = row / kHeadDim, f = row % kHeadDim;
            std::copy_n(&(*v)[(head * kHeadDim + src[f]) * cols], cols,
                        &out[row * cols]);
          }
          *v = std::move(out);
          inv[l].assign(half, 0.0f);
          for (int j = 0; j < r / 2; ++j)
            inv[l][j] = p.layers[l].rope_inv_freq[j];
        }
      });
  for (int l = 0; l < c.num_layers; ++l) {
    w.AddF32("model.layers." + std::to_string(l) + ".self_attn.rotary_inv_freq",
             DType::kF32, {half}, inv[l].data());
  }
  EXPECT_TRUE(w.Write(dir + "/model.safetensors").ok());
  return Load(dir);
}

// Logits of `tokens` fed in chunks of `plan`, optionally under `residency`.
std::vector<float> EngineLogits(std::shared_ptr<const model::ModelWeights> w,
                                const std::string& backend_name,
                                const std::vector<int32_t>& tokens,
                                const std::vector<int>& plan,
                                const ResidencyOptions* residency = nullptr) {
  auto backend = std::move(*kernels::CreateBackend(backend_name));
  const ModelConfig c = w->config;
  ModelRunner runner(std::move(w), backend.get());
  KvCacheOptions o;
  o.page_size = 4;
  o.max_bytes = 8 << 20;
  KvStorage kv_storage = std::move(*CreateKvStorage(runner, backend.get(), o));
  std::shared_ptr<const ResidencyPolicy> policy;
  std::unique_ptr<SequencePolicy> seq;
  if (residency != nullptr) {
    auto made = CreateResidencyPolicy(
        *residency, {c.num_layers, c.num_heads, c.num_kv_heads, c.qk_head_dim,
                     c.sliding_window});
    EXPECT_TRUE(made.ok()) << made.status();
    policy = std::move(*made);
    seq = policy->NewSequence(plan[0]);
  }
  SequenceKv kv;
  kv.Init(*kv_storage.cache);
  std::vector<float> all;
  int at = 0;
  for (int len : plan) {
    EXPECT_TRUE(kv.Reserve(*kv_storage.cache, len).ok());
    ForwardChunk ch{&kv, &tokens[at], len, at, ForwardChunk::Logits::kAll};
    ch.residency = seq.get();
    std::vector<float> logits;
    EXPECT_TRUE(
        runner.Forward({ch}, *kv_storage.cache, *kv_storage.pools, &logits)
            .ok());
    all.insert(all.end(), logits.begin(), logits.end());
    at += len;
  }
  kv.Release(*kv_storage.cache);
  return all;
}

class PartialRope : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    root_ = TempRoot();
    partial_ = PartialModel(root_ + "/partial");
    std::mt19937 rng(9);
    tokens_.resize(23);
    for (auto& t : tokens_) t = static_cast<int32_t>(rng() % kVocab);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::string root_;
  std::shared_ptr<const model::ModelWeights> partial_;
  std::vector<int32_t> tokens_;
};

// Largest |got - want| relative to the largest |want|.
double RelativeError(const std::vector<float>& got,
                     const std::vector<double>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

TEST_P(PartialRope, ForwardMatchesTheFloat64Reference) {
  const std::vector<double> ref = ReferenceLogits(*partial_, tokens_);
  for (const std::vector<int>& plan :
       {std::vector<int>{23}, std::vector<int>{5, 5, 5, 5, 3},
        std::vector<int>{9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}) {
    SCOPED_TRACE(::testing::PrintToString(plan));
    const std::vector<float> got =
        EngineLogits(partial_, GetParam(), tokens_, plan);
    ASSERT_EQ(got.size(), ref.size());
    EXPECT_LT(RelativeError(got, ref), 1e-4);
  }
}

TEST_P(PartialRope, EqualsItsFullyRotaryTwinWithZeroFrequencies) {
  const auto twin =
      FullyRotaryTwin(*partial_, root_ + "/partial", root_ + "/twin");
  ASSERT_TRUE(twin->config.rope_dims.empty());
  const std::vector<float> a =
      EngineLogits(partial_, GetParam(), tokens_, {7, 16});
  const std::vector<float> b = EngineLogits(twin, GetParam(), tokens_, {7, 16});
  ASSERT_EQ(a.size(), b.size());
  std::vector<double> bd(b.begin(), b.end());
  EXPECT_LT(RelativeError(a, bd), 1e-5);
  // And the split matters: the partial model is not the fully rotary one
  // with its default table.
  ModelConfig full = partial_->config;
  full.rope_dims.clear();
  const std::string plain = root_ + "/plain";
  std::filesystem::create_directories(plain);
  std::filesystem::copy_file(root_ + "/partial/model.safetensors",
                             plain + "/model.safetensors");
  std::ofstream(plain + "/config.json") << full.ToJson();
  const std::vector<float> c =
      EngineLogits(Load(plain), GetParam(), tokens_, {7, 16});
  EXPECT_GT(RelativeError(c, bd), 1e-2);
}

TEST_P(PartialRope, CodebookResidencyReRopesWithThePartialTable) {
  if (!(*kernels::CreateBackend(GetParam()))->host_addressable()) {
    GTEST_SKIP() << "codebook layers need a host-addressable backend";
  }
  const std::vector<double> ref = ReferenceLogits(*partial_, tokens_);
  ResidencyOptions ro;
  ro.policy = "spindle";
  ro.codebook_layers = 3;  // every layer
  ro.theta_k = ro.theta_v = 1.0f;
  ro.window = 4;
  std::vector<int> plan = {8};
  plan.resize(16, 1);
  const std::vector<float> got =
      EngineLogits(partial_, GetParam(), tokens_, plan, &ro);
  ASSERT_EQ(got.size(), ref.size());
  EXPECT_LT(RelativeError(got, ref), 1e-4);
}

// The fp8 key scale bounds each rotated PAIR of the partial split: with
// layer 0's key head 0 made of two equal rows, channels 0 and 2 (a pair
// when 4 of 8 channels rotate, two different pairs when all 8 do), the
// partial model's bound is sqrt(2) times the fully rotary one's.
TEST(PartialRopeFp8, KeyScalesFollowThePartialPairs) {
  const std::string root = TempRoot();
  PartialModel(root + "/partial");
  const model::SafetensorsWriter w = EditedTensors(
      root + "/partial/model.safetensors",
      [](const std::string& name, const std::vector<int64_t>& shape,
         std::vector<float>* v) {
        if (name != "model.layers.0.self_attn.k_proj.weight") return;
        const int64_t cols = shape[1];
        std::vector<float> u(v->begin(), v->begin() + cols);
        std::fill(v->begin(), v->end(), 0.0f);
        std::copy(u.begin(), u.end(), v->begin());             // row 0
        std::copy(u.begin(), u.end(), v->begin() + 2 * cols);  // row 2
      });
  for (const char* sub : {"/p", "/f"}) {
    ModelConfig c = PartialConfig();
    if (std::string(sub) == "/f") c.rope_dims.clear();
    std::filesystem::create_directories(root + sub);
    std::ofstream(root + sub + "/config.json") << c.ToJson();
    ASSERT_TRUE(w.Write(root + sub + "/model.safetensors").ok());
  }
  auto backend = std::move(*kernels::CreateBackend("cpu"));
  const KvScales p =
      ModelRunner(Load(root + "/p"), backend.get()).Fp8KvScales();
  const KvScales f =
      ModelRunner(Load(root + "/f"), backend.get()).Fp8KvScales();
  EXPECT_NEAR(p.k[0][0] / f.k[0][0], std::sqrt(2.0), 1e-5);
  EXPECT_EQ(p.v[0][0], f.v[0][0]);
  std::filesystem::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, PartialRope,
                         ::testing::ValuesIn(kernels::RegisteredBackends()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace latentkv::worker
