#include "model/config.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kBase[] = R"({
  "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 3,
  "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "tie_word_embeddings": true %s
})";

std::string Cfg(const std::string& extra) {
  char buf[2048];
  std::snprintf(buf, sizeof(buf), kBase, extra.c_str());
  return buf;
}

TEST(ModelConfigTest, ParsesDefaults) {
  auto c = ModelConfig::FromJson(Cfg(""));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 3);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_THAT(c->qk_head_dim, ElementsAre(8, 8, 8));
  EXPECT_THAT(c->vo_head_dim, ElementsAre(8, 8, 8));
  EXPECT_EQ(c->rope_scheme, RopeScheme::kStandard);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_EQ(c->head_dim(), 8);
  EXPECT_EQ(c->KvValuesPerTokenLayer(0), 4 * 16);
  EXPECT_EQ(c->KvValuesPerToken(), 3 * 4 * 16);
}

TEST(ModelConfigTest, KvHeadsDefaultToHeads) {
  auto c = ModelConfig::FromJson(R"({"hidden_size": 32,
      "intermediate_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 4, "vocab_size": 16})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->max_position_embeddings, 2048);
}

TEST(ModelConfigTest, NumberAndListDims) {
  auto c =
      ModelConfig::FromJson(Cfg(R"(, "qk_head_dim": 4, "vo_head_dim": [2, 6, 8],
             "rope_scheme": "frequency_aware")"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->qk_head_dim, ElementsAre(4, 4, 4));
  EXPECT_THAT(c->vo_head_dim, ElementsAre(2, 6, 8));
  EXPECT_EQ(c->rope_scheme, RopeScheme::kFrequencyAware);
  EXPECT_EQ(c->KvValuesPerTokenLayer(1), 4 * (4 + 6));
  EXPECT_EQ(c->KvValuesPerToken(), 4 * (12 + 16));
}

TEST(ModelConfigTest, KvLatentReduceRatios) {
  auto c = ModelConfig::FromJson(
      Cfg(R"(, "reduce_ratio_qk": 2, "reduce_ratio_vo": 4)"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->qk_head_dim, ElementsAre(4, 4, 4));
  EXPECT_THAT(c->vo_head_dim, ElementsAre(2, 2, 2));
}

// Partial rotary: our per-layer rope_dims, HF's partial_rotary_factor, the
// canonical empty list when every layer is fully rotary, and the limits.
TEST(ModelConfigTest, PartialRotary) {
  auto c = ModelConfig::FromJson(Cfg(R"(, "rope_dims": [2, 0, 8])"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->rope_dims, ElementsAre(2, 0, 8));
  EXPECT_EQ(c->rope_dim(0), 2);
  EXPECT_EQ(c->rope_dim(1), 0);
  auto back = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rope_dims, c->rope_dims);

  // HF: rotary dims = int(head_dim * factor), even.
  auto hf = ModelConfig::FromJson(Cfg(R"(, "partial_rotary_factor": 0.4)"));
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_THAT(hf->rope_dims, ElementsAre(2, 2, 2));  // int(8 * 0.4) = 3 -> 2
  // Fully rotary, however spelled: empty.
  for (const char* full :
       {R"(, "rope_dims": 8)", R"(, "partial_rotary_factor": 1.0)", ""}) {
    auto f = ModelConfig::FromJson(Cfg(full));
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE(f->rope_dims.empty()) << full;
    EXPECT_EQ(f->rope_dim(2), 8);
    EXPECT_EQ(f->ToJson().find("rope_dims"), std::string::npos);
  }
  for (const auto& [extra, want] :
       std::vector<std::pair<std::string, std::string>>{
           {R"(, "rope_dims": [2, 3, 4])", "layer 1: 3 must be even"},
           {R"(, "rope_dims": 10)", "within [0, qk_head_dim 8]"},
           {R"(, "rope_dims": -2)", "must not be negative"},
           {R"(, "rope_dims": [2, 2])", "list has 2 entries"},
           {R"(, "partial_rotary_factor": 1.5)", "must be in [0, 1]"},
           {R"(, "rope_dims": 4, "rope_scheme": "frequency_aware")",
            "standard rope_scheme"}}) {
    auto bad = ModelConfig::FromJson(Cfg(extra));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << extra;
    EXPECT_THAT(bad.status().message(), HasSubstr(want)) << extra;
  }
}

TEST(ModelConfigTest, TokenIdLists) {
  auto c = ModelConfig::FromJson(
      Cfg(R"(, "bos_token_id": 5, "eos_token_id": [7, 9])"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->bos_token_id, 5);
  EXPECT_EQ(c->eos_token_id, 7);
  // The rest of the list also ends generation, and survives ToJson.
  EXPECT_EQ(c->extra_eos_token_ids, (std::vector<int>{9}));
  auto d = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->eos_token_id, 7);
  EXPECT_EQ(d->extra_eos_token_ids, (std::vector<int>{9}));
  EXPECT_FALSE(
      ModelConfig::FromJson(Cfg(R"(, "eos_token_id": [7, 100000])")).ok());
}

void ExpectError(const std::string& json, const std::string& key) {
  auto c = ModelConfig::FromJson(json);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(key)) << c.status();
}

TEST(ModelConfigTest, ErrorsNameTheKey) {
  ExpectError("{not json", "invalid JSON");
  ExpectError("[1, 2]", "not a JSON object");
  ExpectError(R"({"intermediate_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 4, "vocab_size": 16})",
              "hidden_size");
  ExpectError(Cfg(R"(, "qk_head_dim": [4, 4])"), "qk_head_dim");
  ExpectError(Cfg(R"(, "qk_head_dim": 5)"), "qk_head_dim");
  ExpectError(Cfg(R"(, "qk_head_dim": 6, "rope_scheme": "frequency_aware")"),
              "qk_head_dim");
  ExpectError(Cfg(R"(, "vo_head_dim": "big")"), "vo_head_dim");
  ExpectError(Cfg(R"(, "vo_head_dim": [4, 0, 4])"), "vo_head_dim");
  ExpectError(Cfg(R"(, "rope_scheme": "yarn")"), "rope_scheme");
  ExpectError(Cfg(R"(, "rope_scheme": 3)"), "rope_scheme");
  ExpectError(Cfg(R"(, "rms_norm_eps": "x")"), "rms_norm_eps");
  ExpectError(Cfg(R"(, "rms_norm_eps": -1)"), "rms_norm_eps");
  ExpectError(Cfg(R"(, "rope_theta": 0)"), "rope_theta");
  ExpectError(Cfg(R"(, "bos_token_id": 512)"), "bos_token_id");
  ExpectError(Cfg(R"(, "eos_token_id": -3)"), "eos_token_id");
  ExpectError(R"({"hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 3, "num_attention_heads": 8,
      "num_key_value_heads": 3, "vocab_size": 512})",
              "num_key_value_heads");
  ExpectError(R"({"hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 0, "num_attention_heads": 8, "vocab_size": 512})",
              "num_hidden_layers");
  ExpectError(R"({"hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 0, "vocab_size": 512})",
              "num_attention_heads");
  ExpectError(R"({"hidden_size": 60, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512})",
              "num_attention_heads");
  ExpectError(R"({"hidden_size": 64.5, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512})",
              "hidden_size");
  ExpectError(Cfg(R"(, "tie_word_embeddings": "yes")"), "tie_word_embeddings");
  ExpectError(Cfg(R"(, "reduce_ratio_qk": 3)"), "reduce_ratio_qk");
}

// Counts far beyond any model are refused before anything is allocated
// (num_hidden_layers 100,000,000 used to abort the worker with bad_alloc).
TEST(ModelConfigTest, AbsurdCountsAreRefusedByName) {
  ExpectError(R"({"hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 100000000, "num_attention_heads": 8,
      "vocab_size": 512})",
              "num_hidden_layers");
  ExpectError(R"({"hidden_size": 64, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 8,
      "vocab_size": 2000000000})",
              "vocab_size");
  ExpectError(R"({"hidden_size": 1048576, "intermediate_size": 172,
      "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512})",
              "hidden_size");
  ExpectError(Cfg(R"(, "max_position_embeddings": 1000000000)"),
              "max_position_embeddings");
  ExpectError(Cfg(R"(, "qk_head_dim": 100000)"), "qk_head_dim");
  // The largest published shapes stay within the bounds.
  ModelConfig big;
  big.hidden_size = 16384;
  big.intermediate_size = 53248;
  big.num_layers = 126;
  big.num_heads = 128;
  big.num_kv_heads = 8;
  big.vocab_size = 262144;
  big.max_position_embeddings = 131072;
  EXPECT_TRUE(big.CheckBounds().ok());
}

TEST(ModelConfigTest, ToJsonRoundTrip) {
  for (const std::string& extra :
       {std::string(""),
        std::string(R"(, "qk_head_dim": [4, 8, 12], "vo_head_dim": [2, 6, 8],
             "rope_scheme": "frequency_aware", "rope_theta": 500000.0,
             "rms_norm_eps": 1e-6, "bos_token_id": 3, "eos_token_id": 4)")}) {
    auto c = ModelConfig::FromJson(Cfg(extra));
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string text = c->ToJson();
    auto d = ModelConfig::FromJson(text);
    ASSERT_TRUE(d.ok()) << d.status() << "\n" << text;
    EXPECT_EQ(d->hidden_size, c->hidden_size);
    EXPECT_EQ(d->intermediate_size, c->intermediate_size);
    EXPECT_EQ(d->num_layers, c->num_layers);
    EXPECT_EQ(d->num_heads, c->num_heads);
    EXPECT_EQ(d->num_kv_heads, c->num_kv_heads);
    EXPECT_EQ(d->vocab_size, c->vocab_size);
    EXPECT_EQ(d->max_position_embeddings, c->max_position_embeddings);
    EXPECT_EQ(d->rms_norm_eps, c->rms_norm_eps);
    EXPECT_EQ(d->rope_theta, c->rope_theta);
    EXPECT_EQ(d->tie_word_embeddings, c->tie_word_embeddings);
    EXPECT_EQ(d->qk_head_dim, c->qk_head_dim);
    EXPECT_EQ(d->vo_head_dim, c->vo_head_dim);
    EXPECT_EQ(d->rope_scheme, c->rope_scheme);
    EXPECT_EQ(d->bos_token_id, c->bos_token_id);
    EXPECT_EQ(d->eos_token_id, c->eos_token_id);
    EXPECT_EQ(d->ToJson(), text);
  }
  // Uniform dims are written as a number, varying ones as a list.
  auto c = ModelConfig::FromJson(Cfg(R"(, "vo_head_dim": [2, 6, 8])"));
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(c->ToJson(), HasSubstr("\"qk_head_dim\": 8"));
  EXPECT_THAT(c->ToJson(), HasSubstr("\"rms_norm_eps\": 1e-05"));
}

// Gemma 3's features: parsed from their keys, defaults are Llama's, written
// back by ToJson (and only when set), and errors name the key.
TEST(ModelConfigTest, ArchitectureFeatures) {
  auto plain = ModelConfig::FromJson(Cfg(""));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->has_arch_features());
  EXPECT_EQ(plain->ToJson().find("qk_norm"), std::string::npos);
  EXPECT_FLOAT_EQ(plain->attention_scale(0), 1.0f / std::sqrt(8.0f));

  auto c = ModelConfig::FromJson(
      Cfg(R"(, "hidden_act": "gelu_pytorch_tanh", "qk_norm": true,
              "post_norms": true, "embedding_scale": 8.0,
              "query_pre_attn_scalar": 256, "rope_local_base_freq": 10000,
              "layer_sliding_window": [512, 512, 0])"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_act, Activation::kGeluTanh);
  EXPECT_TRUE(c->qk_norm);
  EXPECT_TRUE(c->post_norms);
  EXPECT_FLOAT_EQ(c->embedding_scale, 8.0f);
  EXPECT_FLOAT_EQ(c->attention_scale(2), 1.0f / 16);
  EXPECT_EQ(c->window(0), 512);
  EXPECT_EQ(c->window(2), 0);
  EXPECT_EQ(c->rope_local_theta, 10000.0);
  auto back = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status() << c->ToJson();
  EXPECT_EQ(back->ToJson(), c->ToJson());
  EXPECT_TRUE(back->qk_norm && back->post_norms);
  EXPECT_THAT(back->sliding_window, ElementsAre(512, 512, 0));

  for (const char* bad :
       {R"(, "hidden_act": "relu")", R"(, "qk_norm": 1)",
        R"(, "embedding_scale": 0)", R"(, "query_pre_attn_scalar": -1)",
        R"(, "layer_sliding_window": [1, 2])",
        R"(, "layer_sliding_window": [1, -2, 3])"}) {
    auto r = ModelConfig::FromJson(Cfg(bad));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("config.json: key")) << bad;
  }
  // KV-Latent maps after the q/k norms: the projected width, round trip,
  // parameters (maps included), and refusals.
  auto mapped = ModelConfig::FromJson(
      Cfg(R"(, "qk_norm": true, "qk_norm_dim": 16, "qk_head_dim": 4)"));
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_TRUE(mapped->qk_latent_maps());
  EXPECT_EQ(mapped->qk_proj_dim(1), 16);
  EXPECT_EQ(mapped->qk_head_dim[1], 4);
  auto mapped_back = ModelConfig::FromJson(mapped->ToJson());
  ASSERT_TRUE(mapped_back.ok()) << mapped_back.status();
  EXPECT_EQ(mapped_back->qk_norm_dim, 16);
  {
    // Against the same model without maps at d_qk 16: the maps add
    // (heads + kv heads) * 4 * 16 per layer.
    auto wide =
        ModelConfig::FromJson(Cfg(R"(, "qk_norm": true, "qk_head_dim": 16)"));
    ASSERT_TRUE(wide.ok());
    EXPECT_EQ(mapped->ParameterCount() - wide->ParameterCount(),
              3 * int64_t{mapped->num_heads + mapped->num_kv_heads} * 4 * 16);
  }
  for (const char* bad :
       {R"(, "qk_norm_dim": 16)", R"(, "qk_norm": true, "qk_norm_dim": -2)",
        R"(, "qk_norm": true, "qk_norm_dim": 5000)",
        R"(, "qk_norm": true, "qk_norm_dim": 2.5)",
        R"(, "qk_norm": true, "qk_norm_dim": "16")"}) {
    auto r = ModelConfig::FromJson(Cfg(bad));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("qk_norm_dim")) << bad;
  }
  // HF Gemma directories keep norm weights as w - 1: refused by name.
  auto hf = ModelConfig::FromJson(Cfg(R"(, "model_type": "gemma3_text")"));
  EXPECT_EQ(hf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(hf.status().message(), HasSubstr("GGUF"));
}

// HF Qwen and RoPE-scaling keys: model_type qwen2 implies q/k/v biases,
// qwen3 q/k norms; rope_scaling round-trips through ToJson; unknown scaling
// types and bad factors are refused by name.
TEST(ModelConfigTest, QwenAndRopeScalingKeys) {
  auto q2 = ModelConfig::FromJson(Cfg(R"(, "model_type": "qwen2")"));
  ASSERT_TRUE(q2.ok()) << q2.status();
  EXPECT_TRUE(q2->qkv_bias);
  auto q3 = ModelConfig::FromJson(Cfg(R"(, "model_type": "qwen3")"));
  ASSERT_TRUE(q3.ok()) << q3.status();
  EXPECT_TRUE(q3->qk_norm);
  auto y = ModelConfig::FromJson(
      Cfg(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
              "original_max_position_embeddings": 128})"));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->rope_scaling.type, ModelConfig::RopeScaling::Type::kYarn);
  EXPECT_EQ(y->rope_scaling.original_max_position, 128);
  auto back = ModelConfig::FromJson(y->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), y->ToJson());
  EXPECT_FLOAT_EQ(back->attention_scale(0), y->attention_scale(0));
  for (const char* bad :
       {R"(, "rope_scaling": {"rope_type": "longrope", "factor": 4})",
        R"(, "rope_scaling": {"rope_type": "linear", "factor": 0.5})",
        R"(, "rope_scaling": [1])", R"(, "rope_freq_factors": [1, 2])",
        // Finite as a double, infinite as the f32 it is held in
        // (fuzz_config_json: the round trip through ToJson broke).
        R"(, "rope_freq_factors": [1, 1, 1, 1e125])",
        R"(, "rope_freq_factors": [1, 1, 1, 1e-60])"}) {
    auto r = ModelConfig::FromJson(Cfg(bad));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ModelConfigTest, ParameterCount) {
  auto c = ModelConfig::FromJson(Cfg(""));
  ASSERT_TRUE(c.ok());
  // stories260K-like with 3 layers, tied.
  const int64_t per_layer =
      2 * 64 + (8 + 4) * 8 * 64 + 4 * 8 * 64 + 64 * 8 * 8 + 3 * 64 * 172;
  EXPECT_EQ(c->ParameterCount(), 512 * 64 + 64 + 3 * per_layer);
  c->tie_word_embeddings = false;
  EXPECT_EQ(c->ParameterCount(), 2 * 512 * 64 + 64 + 3 * per_layer);
}

TEST(ModelConfigTest, FromDir) {
  const std::string dir = testing::TempDir() + "/config_from_dir";
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir + "/config.json");
    out << Cfg("");
  }
  auto c = ModelConfig::FromDir(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers, 3);
  auto missing = ModelConfig::FromDir(dir + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace latentkv::model
