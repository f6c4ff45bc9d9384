// Gemma 3's architecture features in the engine against the independent
// float64 reference (reference_forward_for_tests.h) on synthetic weights:
// q/k RMSNorm per head, norms after attention and the MLP, GeGLU with the
// tanh GELU, embeddings scaled by sqrt(hidden), a single KV head wider than
// hidden / heads, the attention scale from query_pre_attn_scalar, and
// sliding-window layers (with their own RoPE base) beside a global one.
// Prefill whole, prefill in chunks that cross the windows, and decode step
// by step, on every registered backend (cuda instances carry the gpu label).
#include <stdlib.h>

#include <cmath>
#include <filesystem>
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

constexpr int kVocab = 89;

ModelConfig GemmaLikeConfig() {
  ModelConfig c;
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.vocab_size = kVocab;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0;
  c.rope_local_theta = 37.0;
  c.qk_head_dim = {16, 16, 16};  // wider than hidden / heads = 10
  c.vo_head_dim = {16, 16, 16};
  c.tie_word_embeddings = true;
  c.hidden_act = model::Activation::kGeluTanh;
  c.qk_norm = true;
  c.post_norms = true;
  c.embedding_scale = std::sqrt(40.0f);
  c.query_pre_attn_scalar = 9.0f;
  c.sliding_window = {3, 5, 0};  // two local layers, then a global one
  return c;
}

// The KV-Latent form of it: q/k heads projected and normed at 16 wide, then
// mapped per head to latent widths 8 / 12 / 16 with partial rotary (the cache
// holds only the latent keys).
ModelConfig MappedGemmaLikeConfig() {
  ModelConfig c = GemmaLikeConfig();
  c.qk_norm_dim = 16;
  c.qk_head_dim = {8, 12, 16};
  c.vo_head_dim = {8, 16, 12};
  c.rope_dims = {4, 6, 16};
  return c;
}

// Random weights with spread norms (so every norm's weights matter).
std::shared_ptr<const model::ModelWeights> GemmaLikeModel(
    const ModelConfig& config = GemmaLikeConfig()) {
  std::string root = "/tmp/latentkv-gemma-XXXXXX";
  EXPECT_NE(mkdtemp(root.data()), nullptr);
  const std::string dir = root + "/gemma_like";
  EXPECT_TRUE(model::WriteSyntheticModel(config, dir, DType::kF32, 11).ok());
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> spread(0.3f, 2.0f);
  const std::string st = dir + "/model.safetensors";
  EXPECT_TRUE(EditedTensors(st,
                            [&](const std::string& name, const auto&,
                                std::vector<float>* v) {
                              const bool norm =
                                  name.find("norm") != std::string::npos;
                              for (float& x : *v)
                                x = norm ? spread(rng) : 12 * x;
                            })
                  .Write(st)
                  .ok());
  auto m = model::LoadModel(dir);
  EXPECT_TRUE(m.ok()) << m.status();
  std::filesystem::remove_all(root);  // the mapping stays valid
  return std::shared_ptr<const model::ModelWeights>(std::move(*m));
}

struct Harness {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<KvPools> pools;
  Harness(std::shared_ptr<const model::ModelWeights> w,
          const std::string& backend_name)
      : backend(std::move(*kernels::CreateBackend(backend_name))) {
    runner = std::make_unique<ModelRunner>(std::move(w), backend.get());
    KvCacheOptions o;
    o.page_size = 4;
    o.max_bytes = 8 << 20;
    KvStorage kv = std::move(*CreateKvStorage(*runner, backend.get(), o));
    cache = std::move(kv.cache);
    pools = std::move(kv.pools);
  }
};

// Largest |got - want| over a row, relative to the row's largest |want|.
double RelativeError(const float* got, const double* want) {
  double err = 0, scale = 0;
  for (int v = 0; v < kVocab; ++v) {
    err = std::max(err, std::abs(got[v] - want[v]));
    scale = std::max(scale, std::abs(want[v]));
  }
  return err / scale;
}

class GemmaFeatures : public ::testing::TestWithParam<std::string> {};

// Chunk plans over 19 tokens: whole, chunks of 4 (each crossing a window
// edge), and a 7-token prefill then one token a step.
void ExpectForwardMatchesTheReference(
    std::shared_ptr<const model::ModelWeights> weights,
    const std::string& backend) {
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(19);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % kVocab);
  const std::vector<double> ref = ReferenceLogits(*weights, tokens);
  double max_ref = 0;
  for (double x : ref) max_ref = std::max(max_ref, std::abs(x));
  EXPECT_GT(max_ref, 1.0);  // far from a trivial model
  for (const std::vector<int>& plan :
       {std::vector<int>{19}, std::vector<int>{4, 4, 4, 4, 3},
        std::vector<int>{7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}) {
    SCOPED_TRACE(::testing::PrintToString(plan));
    Harness h(weights, backend);
    SequenceKv kv;
    kv.Init(*h.cache);
    int at = 0;
    for (int len : plan) {
      ASSERT_TRUE(kv.Reserve(*h.cache, len).ok());
      ForwardChunk ch{&kv, &tokens[at], len, at, ForwardChunk::Logits::kAll};
      std::vector<float> logits;
      ASSERT_TRUE(h.runner->Forward({ch}, *h.cache, *h.pools, &logits).ok());
      for (int r = 0; r < len; ++r) {
        EXPECT_LT(RelativeError(logits.data() + r * kVocab,
                                ref.data() + (at + r) * kVocab),
                  1e-4)
            << "position " << at + r;
      }
      at += len;
    }
    kv.Release(*h.cache);
  }
}

TEST_P(GemmaFeatures, ForwardMatchesTheFloat64Reference) {
  ExpectForwardMatchesTheReference(GemmaLikeModel(), GetParam());
}

// KV-Latent maps after the q/k norms (qk_norm_dim): the cache holds the
// latent widths only.
TEST_P(GemmaFeatures, LatentMapsAfterTheNormsMatchTheFloat64Reference) {
  const auto weights = GemmaLikeModel(MappedGemmaLikeConfig());
  EXPECT_EQ(weights->layers[1].q_latent.shape,
            (std::vector<int64_t>{4 * 12, 16}));
  EXPECT_EQ(weights->layers[1].q_proj.shape,
            (std::vector<int64_t>{4 * 16, 40}));
  EXPECT_EQ(weights->config.KvValuesPerToken(),
            (8 + 8) + (12 + 16) + (16 + 12));
  ExpectForwardMatchesTheReference(weights, GetParam());
}

// Sliding-window layers run through the capacity mechanism (residency
// "none" with bound windows): each local layer holds at most 2W tokens per
// KV head, dropping only tokens its window has passed, so 60 decode steps
// still equal the float64 reference exactly while the cache stays bounded
// (and the global layer keeps everything).
TEST_P(GemmaFeatures, BoundedWindowsKeepTheLogitsAndBoundTheCache) {
  const auto weights = GemmaLikeModel();
  const model::ModelConfig& c = weights->config;
  std::mt19937 rng(4);
  std::vector<int32_t> tokens(60);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % kVocab);
  const std::vector<double> ref = ReferenceLogits(*weights, tokens);
  auto policy = CreateResidencyPolicy(
      ResidencyOptions{}, {c.num_layers, c.num_heads, c.num_kv_heads,
                           c.qk_head_dim, c.sliding_window});
  ASSERT_TRUE(policy.ok()) << policy.status();
  ASSERT_NE(*policy, nullptr);  // windows alone make a plan
  EXPECT_EQ((*policy)->capacities(), (std::vector<int64_t>{6, 10, 0}));
  Harness h(weights, GetParam());
  SequenceKv kv;
  kv.Init(*h.cache);
  kv.SetCapacity((*policy)->capacities());
  std::unique_ptr<SequencePolicy> seq = (*policy)->NewSequence(4);
  int at = 0;
  while (at < 60) {
    const int len = at == 0 ? 4 : 1;
    ASSERT_LE(len, kv.Room());
    ASSERT_TRUE(kv.Reserve(*h.cache, len).ok());
    ForwardChunk ch{&kv, &tokens[at], len, at, ForwardChunk::Logits::kAll};
    ch.residency = seq.get();
    std::vector<float> logits;
    ASSERT_TRUE(h.runner->Forward({ch}, *h.cache, *h.pools, &logits).ok());
    for (int r = 0; r < len; ++r) {
      ASSERT_LT(RelativeError(logits.data() + r * kVocab,
                              ref.data() + (at + r) * kVocab),
                1e-4)
          << "position " << at + r;
    }
    at += len;
    EXPECT_LT(kv.held_tokens(0, 0), 6) << "after position " << at;
    EXPECT_LT(kv.held_tokens(1, 0), 10) << "after position " << at;
    EXPECT_EQ(kv.held_tokens(2, 0), at);
  }
  EXPECT_GT(seq->evicted_slots(), 60);  // both local layers dropped tokens
  kv.Release(*h.cache);
}

// Each feature changes the logits (so the reference check above sees all of
// them): turning one off moves the reference by far more than the tolerance.
TEST(GemmaFeaturesReference, EveryFeatureMatters) {
  const auto weights = GemmaLikeModel();
  std::vector<int32_t> tokens(12);
  for (int i = 0; i < 12; ++i) tokens[i] = (i * 7 + 3) % kVocab;
  const std::vector<double> base = ReferenceLogits(*weights, tokens);
  auto differs = [&](auto mutate) {
    auto m = std::make_shared<model::ModelWeights>();
    m->config = weights->config;
    m->embed_tokens = weights->embed_tokens;
    m->layers = weights->layers;
    m->final_norm = weights->final_norm;
    m->lm_head = weights->lm_head;
    mutate(&m->config);
    const std::vector<double> got = ReferenceLogits(*m, tokens);
    double diff = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      diff = std::max(diff, std::abs(got[i] - base[i]));
    }
    return diff;
  };
  EXPECT_GT(differs([](ModelConfig* c) { c->qk_norm = false; }), 1e-2);
  EXPECT_GT(differs([](ModelConfig* c) { c->post_norms = false; }), 1e-2);
  EXPECT_GT(
      differs([](ModelConfig* c) { c->hidden_act = model::Activation::kSilu; }),
      1e-2);
  EXPECT_GT(differs([](ModelConfig* c) { c->embedding_scale = 1; }), 1e-2);
  EXPECT_GT(differs([](ModelConfig* c) { c->query_pre_attn_scalar = 0; }),
            1e-2);
  EXPECT_GT(differs([](ModelConfig* c) { c->sliding_window.clear(); }), 1e-2);
}

// The maps matter in the reference: the mapped model's logits move when one
// head's map is scaled.
TEST(GemmaFeaturesReference, LatentMapsMatter) {
  const auto weights = GemmaLikeModel(MappedGemmaLikeConfig());
  std::vector<int32_t> tokens(12);
  for (int i = 0; i < 12; ++i) tokens[i] = (i * 5 + 1) % kVocab;
  const std::vector<double> base = ReferenceLogits(*weights, tokens);
  auto m = std::make_shared<model::ModelWeights>(model::ModelWeights{
      weights->config, weights->embed_tokens, weights->layers,
      weights->final_norm, weights->lm_head, nullptr, nullptr});
  for (auto* map : {&m->layers[0].k_latent, &m->layers[2].q_latent}) {
    std::vector<float> scaled(map->f32(), map->f32() + map->numel());
    for (float& x : scaled) x *= 1.5f;
    map->owned.assign(reinterpret_cast<const uint8_t*>(scaled.data()),
                      reinterpret_cast<const uint8_t*>(scaled.data()) +
                          scaled.size() * sizeof(float));
    map->data = map->owned.data();
  }
  const std::vector<double> got = ReferenceLogits(*m, tokens);
  double diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::abs(got[i] - base[i]));
  }
  EXPECT_GT(diff, 1e-2);
}

// The local layers' RoPE tables use rope_local_base_freq; the global
// layer's rope_theta (inv_freq[j] = base^(-2j/d)).
TEST(GemmaFeaturesReference, LocalLayersUseTheirOwnRopeBase) {
  const auto weights = GemmaLikeModel();
  for (int l = 0; l < 3; ++l) {
    const double base = l < 2 ? 37.0 : 10000.0;
    const auto& inv = weights->layers[l].rope_inv_freq;
    ASSERT_EQ(inv.size(), 8u);
    for (int j = 0; j < 8; ++j) {
      EXPECT_NEAR(inv[j], std::pow(base, -2.0 * j / 16), 1e-7)
          << "layer " << l << " pair " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, GemmaFeatures,
                         ::testing::ValuesIn(kernels::RegisteredBackends()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace latentkv::worker
