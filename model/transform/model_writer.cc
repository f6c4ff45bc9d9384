#include "model/transform/model_writer.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/safetensors.h"

namespace latentkv::model::transform {
namespace {

namespace fs = std::filesystem;

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot create ", path));
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status CheckSize(const std::vector<float>& v, int64_t want,
                       const std::string& name) {
  if (static_cast<int64_t>(v.size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": has ", v.size(), " values, the config implies ", want));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<float> F32Copy(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

absl::Status WriteConvertedModel(const ModelWeights& src,
                                 const std::string& src_dir,
                                 const ModelConfig& config,
                                 const std::vector<AttentionTensors>& attn,
                                 const std::string& out_dir, DType dtype,
                                 const std::string& source_tag,
                                 bool copy_tokenizer) {
  absl::Status s = config.Validate();
  if (!s.ok()) return s;
  if (static_cast<int>(attn.size()) != config.num_layers) {
    return absl::InvalidArgumentError("one AttentionTensors per layer needed");
  }
  const int64_t h = config.hidden_size;
  for (int l = 0; l < config.num_layers; ++l) {
    const std::string pre = absl::StrCat("layer ", l, " ");
    const int64_t dqk = config.qk_head_dim[l], dvo = config.vo_head_dim[l];
    const int64_t dp = config.qk_proj_dim(l);
    const AttentionTensors& a = attn[l];
    if (s.ok()) s = CheckSize(a.q, config.num_heads * dp * h, pre + "q");
    if (s.ok()) s = CheckSize(a.k, config.num_kv_heads * dp * h, pre + "k");
    if (s.ok() && config.qk_latent_maps()) {
      s = CheckSize(a.q_latent, config.num_heads * dqk * dp, pre + "q_latent");
      if (s.ok()) {
        s = CheckSize(a.k_latent, config.num_kv_heads * dqk * dp,
                      pre + "k_latent");
      }
    }
    if (s.ok()) s = CheckSize(a.v, config.num_kv_heads * dvo * h, pre + "v");
    if (s.ok()) s = CheckSize(a.o, config.num_heads * dvo * h, pre + "o");
    if (s.ok() && !a.rope_inv_freq.empty()) {
      s = CheckSize(a.rope_inv_freq, config.rope_dim(l) / 2,
                    pre + "rotary_inv_freq");
    }
  }
  if (!s.ok()) return s;
  if (src.embed_tokens.dtype != DType::kF32) {
    return absl::InvalidArgumentError("source model must be loaded as f32");
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", out_dir, ": ", ec.message()));
  }
  if (fs::equivalent(out_dir, src_dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out ", out_dir, " is the source model directory"));
  }
  s = WriteText(out_dir + "/config.json", config.ToJson());
  if (!s.ok()) return s;
  for (const char* name : {"tokenizer.model", "tokenizer.bin", "tokenizer.json",
                           "tokenizer_config.json"}) {
    const fs::path from = fs::path(src_dir) / name;
    if (!copy_tokenizer || !fs::exists(from)) continue;
    fs::copy_file(from, fs::path(out_dir) / name,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot copy ", from.string(), ": ", ec.message()));
    }
  }

  struct Item {
    std::string name;
    std::vector<int64_t> shape;
    const float* data;
    DType dtype;
  };
  std::vector<Item> items;
  const int64_t v = config.vocab_size, inter = config.intermediate_size;
  items.push_back(
      {"model.embed_tokens.weight", {v, h}, src.embed_tokens.f32(), dtype});
  items.push_back({"model.norm.weight", {h}, src.final_norm.f32(), dtype});
  if (!config.tie_word_embeddings) {
    items.push_back({"lm_head.weight", {v, h}, src.lm_head.f32(), dtype});
  }
  for (int l = 0; l < config.num_layers; ++l) {
    const LayerWeights& lw = src.layers[l];
    const AttentionTensors& a = attn[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const int64_t dqk = config.qk_head_dim[l], dvo = config.vo_head_dim[l];
    const int64_t dp = config.qk_proj_dim(l);  // q/k heads as projected
    const int64_t nh = config.num_heads, nkv = config.num_kv_heads;
    items.push_back(
        {p + "input_layernorm.weight", {h}, lw.attn_norm.f32(), dtype});
    items.push_back(
        {p + "post_attention_layernorm.weight", {h}, lw.ffn_norm.f32(), dtype});
    items.push_back(
        {p + "self_attn.q_proj.weight", {nh * dp, h}, a.q.data(), dtype});
    items.push_back(
        {p + "self_attn.k_proj.weight", {nkv * dp, h}, a.k.data(), dtype});
    if (config.qk_latent_maps()) {
      items.push_back({p + "self_attn.q_latent.weight",
                       {nh * dqk, dp},
                       a.q_latent.data(),
                       DType::kF32});
      items.push_back({p + "self_attn.k_latent.weight",
                       {nkv * dqk, dp},
                       a.k_latent.data(),
                       DType::kF32});
    }
    items.push_back(
        {p + "self_attn.v_proj.weight", {nkv * dvo, h}, a.v.data(), dtype});
    items.push_back(
        {p + "self_attn.o_proj.weight", {h, nh * dvo}, a.o.data(), dtype});
    if (!a.rope_inv_freq.empty()) {
      items.push_back({p + "self_attn.rotary_inv_freq",
                       {static_cast<int64_t>(a.rope_inv_freq.size())},
                       a.rope_inv_freq.data(),
                       DType::kF32});
    }
    items.push_back(
        {p + "mlp.gate_proj.weight", {inter, h}, lw.gate_proj.f32(), dtype});
    items.push_back(
        {p + "mlp.up_proj.weight", {inter, h}, lw.up_proj.f32(), dtype});
    items.push_back(
        {p + "mlp.down_proj.weight", {h, inter}, lw.down_proj.f32(), dtype});
    if (config.qk_norm) {
      items.push_back(
          {p + "self_attn.q_norm.weight", {dp}, lw.q_norm.f32(), dtype});
      items.push_back(
          {p + "self_attn.k_norm.weight", {dp}, lw.k_norm.f32(), dtype});
    }
    if (config.qkv_bias) {
      items.push_back(
          {p + "self_attn.q_proj.bias", {nh * dp}, lw.q_bias.f32(), dtype});
      items.push_back(
          {p + "self_attn.k_proj.bias", {nkv * dp}, lw.k_bias.f32(), dtype});
      items.push_back(
          {p + "self_attn.v_proj.bias", {nkv * dvo}, lw.v_bias.f32(), dtype});
    }
    if (config.post_norms) {
      items.push_back({p + "post_self_attn_layernorm.weight",
                       {h},
                       lw.post_attn_norm.f32(),
                       dtype});
      items.push_back({p + "post_feedforward_layernorm.weight",
                       {h},
                       lw.post_ffn_norm.f32(),
                       dtype});
    }
  }
  SafetensorsStreamWriter w;
  w.SetMetadata("format", "pt");
  w.SetMetadata("source", source_tag);
  for (const Item& it : items) w.Declare(it.name, it.dtype, it.shape);
  s = w.Open(out_dir + "/model.safetensors");
  for (const Item& it : items) {
    if (!s.ok()) break;
    s = w.WriteF32(it.name, it.data);
  }
  if (s.ok()) s = w.Finish();
  return s;
}

}  // namespace latentkv::model::transform
