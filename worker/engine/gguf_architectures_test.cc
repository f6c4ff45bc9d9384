// Qwen2 / Qwen2.5 (q/k/v biases), Qwen3 (q/k norms, key_length wider than
// hidden / heads), Llama 3.1 RoPE scaling (llama.cpp's rope_freqs factors)
// and YaRN, each as a synthetic GGUF written with the project's GgufWriter
// the way llama.cpp's converter lays them out: the model first exists as a
// safetensors directory with random weights (model A); its GGUF (model B)
// must load to the same config and tensors, and the engine's logits on B
// must equal the float64 reference forward of A.
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/gguf/gguf_writer.h"
#include "model/safetensors.h"
#include "worker/engine/edited_tensors_for_tests.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/reference_forward_for_tests.h"

namespace latentkv::worker {
namespace {

using model::GgmlType;
using model::ModelConfig;
using model::ModelWeights;
using model::Tensor;

constexpr int kVocab = 71;

struct Case {
  std::string name;
  std::string arch;
  ModelConfig config;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

ModelConfig Base() {
  ModelConfig c = ModelConfig::Llama(/*hidden=*/32, /*intermediate=*/48,
                                     /*layers=*/2, /*heads=*/4,
                                     /*kv_heads=*/2, kVocab, /*context=*/64,
                                     /*rope_theta=*/100.0);
  c.rms_norm_eps = 1e-6f;
  return c;
}

std::vector<Case> Cases() {
  std::vector<Case> out;
  ModelConfig qwen2 = Base();
  qwen2.qkv_bias = true;
  out.push_back({"qwen2", "qwen2", qwen2});
  ModelConfig qwen3 = Base();
  qwen3.qk_norm = true;
  qwen3.qk_head_dim = {16, 16};  // hidden / heads = 8
  qwen3.vo_head_dim = {16, 16};
  out.push_back({"qwen3", "qwen3", qwen3});
  ModelConfig llama31 = Base();
  for (int j = 0; j < 4; ++j) llama31.rope_freq_factors.push_back(1 + 2.5f * j);
  out.push_back({"llama31_rope_freqs", "llama", llama31});
  ModelConfig yarn = Base();
  yarn.rope_scaling.type = ModelConfig::RopeScaling::Type::kYarn;
  yarn.rope_scaling.factor = 4;
  yarn.rope_scaling.original_max_position = 16;
  out.push_back({"yarn", "llama", yarn});
  return out;
}

// Model A: random weights (norms and biases spread) in a safetensors dir.
std::shared_ptr<const ModelWeights> ModelA(const ModelConfig& c,
                                           const std::string& dir) {
  EXPECT_TRUE(model::WriteSyntheticModel(c, dir, DType::kF32, 9).ok());
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> spread(0.5f, 1.5f);
  const std::string st = dir + "/model.safetensors";
  EXPECT_TRUE(
      EditedTensors(
          st,
          [&](const std::string& name, const auto&, std::vector<float>* v) {
            const bool norm = name.find("norm") != std::string::npos;
            const bool bias = name.find("bias") != std::string::npos;
            for (float& x : *v) x = norm ? spread(rng) : (bias ? 50 : 15) * x;
          })
          .Write(st)
          .ok());
  auto m = model::LoadModel(dir);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::shared_ptr<const ModelWeights>(std::move(*m));
}

// llama.cpp's Q/K row order for its interleaved RoPE (llama only).
std::vector<float> Permute(const Tensor& t, int64_t heads) {
  const int64_t rows = t.shape[0], cols = t.shape[1], hd = rows / heads;
  std::vector<float> out(rows * cols);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int half = 0; half < 2; ++half)
        std::copy_n(t.f32() + (h * hd + half * hd / 2 + i) * cols, cols,
                    out.data() + (h * hd + 2 * i + half) * cols);
  return out;
}

// Model B: A as llama.cpp's converter writes `arch`.
std::string WriteGguf(const ModelWeights& a, const std::string& arch,
                      const std::string& path) {
  const ModelConfig& c = a.config;
  model::GgufWriter g;
  const std::string p = arch + ".";
  g.SetString("general.architecture", arch);
  g.SetUint32(p + "block_count", c.num_layers);
  g.SetUint32(p + "context_length", c.max_position_embeddings);
  g.SetUint32(p + "embedding_length", c.hidden_size);
  g.SetUint32(p + "feed_forward_length", c.intermediate_size);
  g.SetUint32(p + "attention.head_count", c.num_heads);
  g.SetUint32(p + "attention.head_count_kv", c.num_kv_heads);
  g.SetUint32(p + "attention.key_length", c.qk_head_dim[0]);
  g.SetUint32(p + "attention.value_length", c.vo_head_dim[0]);
  g.SetFloat32(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  g.SetFloat32(p + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  g.SetUint32(p + "vocab_size", c.vocab_size);
  if (c.rope_scaling.type == ModelConfig::RopeScaling::Type::kYarn) {
    g.SetString(p + "rope.scaling.type", "yarn");
    g.SetFloat32(p + "rope.scaling.factor",
                 static_cast<float>(c.rope_scaling.factor));
    g.SetUint32(p + "rope.scaling.original_context_length",
                c.rope_scaling.original_max_position);
  }
  auto add = [&](const std::string& name, const float* data,
                 std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<int64_t> dims(shape.rbegin(), shape.rend());
    EXPECT_TRUE(g.AddTensor(name, dims, GgmlType::kF32, data, n * 4).ok());
  };
  if (!c.rope_freq_factors.empty()) {
    add("rope_freqs.weight", c.rope_freq_factors.data(),
        {static_cast<int64_t>(c.rope_freq_factors.size())});
  }
  add("token_embd.weight", a.embed_tokens.f32(), a.embed_tokens.shape);
  add("output_norm.weight", a.final_norm.f32(), a.final_norm.shape);
  if (!c.tie_word_embeddings) {
    add("output.weight", a.lm_head.f32(), a.lm_head.shape);
  }
  const bool permute = arch == "llama";
  for (int l = 0; l < c.num_layers; ++l) {
    const model::LayerWeights& w = a.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    const std::vector<float> q = Permute(w.q_proj, c.num_heads),
                             k = Permute(w.k_proj, c.num_kv_heads);
    add(b + "attn_norm.weight", w.attn_norm.f32(), w.attn_norm.shape);
    add(b + "attn_q.weight", permute ? q.data() : w.q_proj.f32(),
        w.q_proj.shape);
    add(b + "attn_k.weight", permute ? k.data() : w.k_proj.f32(),
        w.k_proj.shape);
    add(b + "attn_v.weight", w.v_proj.f32(), w.v_proj.shape);
    add(b + "attn_output.weight", w.o_proj.f32(), w.o_proj.shape);
    add(b + "ffn_norm.weight", w.ffn_norm.f32(), w.ffn_norm.shape);
    add(b + "ffn_gate.weight", w.gate_proj.f32(), w.gate_proj.shape);
    add(b + "ffn_up.weight", w.up_proj.f32(), w.up_proj.shape);
    add(b + "ffn_down.weight", w.down_proj.f32(), w.down_proj.shape);
    if (c.qkv_bias) {
      add(b + "attn_q.bias", w.q_bias.f32(), w.q_bias.shape);
      add(b + "attn_k.bias", w.k_bias.f32(), w.k_bias.shape);
      add(b + "attn_v.bias", w.v_bias.f32(), w.v_bias.shape);
    }
    if (c.qk_norm) {
      add(b + "attn_q_norm.weight", w.q_norm.f32(), w.q_norm.shape);
      add(b + "attn_k_norm.weight", w.k_norm.f32(), w.k_norm.shape);
    }
  }
  EXPECT_TRUE(g.Write(path).ok());
  return path;
}

class GgufArchitectures : public ::testing::TestWithParam<Case> {};

TEST_P(GgufArchitectures, GgufLoadsAsTheModelAndMatchesTheReference) {
  const Case& tc = GetParam();
  std::string root = "/tmp/latentkv-arch-XXXXXX";
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  const auto a = ModelA(tc.config, root + "/a");
  auto loaded = model::LoadModel(WriteGguf(*a, tc.arch, root + "/b.gguf"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<const ModelWeights> b(std::move(*loaded));
  std::filesystem::remove_all(root);  // mappings stay valid

  // The GGUF metadata carries every feature.
  EXPECT_EQ(b->config.qkv_bias, tc.config.qkv_bias);
  EXPECT_EQ(b->config.qk_norm, tc.config.qk_norm);
  EXPECT_EQ(b->config.qk_head_dim, tc.config.qk_head_dim);
  EXPECT_EQ(b->config.rope_freq_factors, tc.config.rope_freq_factors);
  EXPECT_EQ(b->config.rope_scaling.type, tc.config.rope_scaling.type);
  EXPECT_EQ(b->config.attention_scale(0), a->config.attention_scale(0));
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(b->layers[l].rope_inv_freq, a->layers[l].rope_inv_freq);
  }

  auto backend = std::move(*kernels::CreateBackend("cpu"));
  ModelRunner runner(b, backend.get());
  KvCacheOptions o;
  o.page_size = 4;
  o.max_bytes = 4 << 20;
  KvStorage kv = std::move(*CreateKvStorage(runner, backend.get(), o));
  std::vector<int32_t> tokens(40);  // past YaRN's original context of 16
  for (int i = 0; i < 40; ++i) tokens[i] = (i * 29 + 5) % kVocab;
  const std::vector<double> ref = ReferenceLogits(*a, tokens);
  SequenceKv seq;
  seq.Init(*kv.cache);
  for (int at = 0; at < 40;) {
    const int len = at == 0 ? 13 : 3;
    ASSERT_TRUE(seq.Reserve(*kv.cache, len).ok());
    ForwardChunk ch{&seq, &tokens[at], len, at, ForwardChunk::Logits::kAll};
    std::vector<float> logits;
    ASSERT_TRUE(runner.Forward({ch}, *kv.cache, *kv.pools, &logits).ok());
    for (int r = 0; r < len; ++r) {
      double err = 0, scale = 0;
      for (int v = 0; v < kVocab; ++v) {
        const double want = ref[(at + r) * kVocab + v];
        err = std::max(err, std::abs(logits[r * kVocab + v] - want));
        scale = std::max(scale, std::abs(want));
      }
      EXPECT_GT(scale, 1.0);
      EXPECT_LT(err / scale, 1e-4) << "position " << at + r;
    }
    at += len;
  }
  seq.Release(*kv.cache);
}

INSTANTIATE_TEST_SUITE_P(All, GgufArchitectures, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace latentkv::worker
