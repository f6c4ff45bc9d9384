#include "model/gguf_arch.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace latentkv::model::internal {
namespace {

absl::Status Gemma3(const GgufFile& f, ModelConfig* c) {
  c->hidden_act = Activation::kGeluTanh;
  c->qk_norm = true;
  c->post_norms = true;
  c->embedding_scale = std::sqrt(static_cast<float>(c->hidden_size));
  c->query_pre_attn_scalar =
      c->num_layers == 62
          ? static_cast<float>(c->hidden_size / c->num_heads)
          : static_cast<float>(c->qk_head_dim.empty() ? 0 : c->qk_head_dim[0]);
  c->rope_local_theta = 10000.0;
  const std::string key = "gemma3.attention.sliding_window";
  if (!f.Has(key)) return absl::OkStatus();  // every layer global
  auto w = f.GetInt(key);
  if (!w.ok()) return w.status();
  if (*w < 0 || *w > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": ", key, " = ", *w));
  }
  c->sliding_window.assign(c->num_layers, 0);
  for (int l = 0; l < c->num_layers; ++l) {
    if (l % 6 != 5) c->sliding_window[l] = static_cast<int>(*w);
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Float(const GgufFile& f, const std::string& key,
                             double fallback) {
  if (!f.Has(key)) return fallback;
  auto v = f.GetFloat(key);
  if (!v.ok()) return v.status();
  if (!std::isfinite(*v) || *v <= 0 || *v > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": ", key, " = ", *v));
  }
  return *v;
}

}  // namespace

bool SupportedGgufArchitecture(const std::string& arch) {
  return arch == "llama" || arch == "gemma3" || arch == "qwen2" ||
         arch == "qwen3";
}

absl::Status SetArchFeatures(const GgufFile& f, const std::string& arch,
                             ModelConfig* c) {
  if (arch == "gemma3") return Gemma3(f, c);
  if (arch == "qwen2") {
    c->qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  } else if (arch == "qwen3") {
    c->qk_norm = true;
  }
  return absl::OkStatus();
}

absl::Status ReadRopeScaling(const GgufFile& f, const std::string& a,
                             int head_dim, ModelConfig* c) {
  using Type = ModelConfig::RopeScaling::Type;
  ModelConfig::RopeScaling& rs = c->rope_scaling;
  if (f.Has(a + "rope.scaling.type")) {
    auto type = f.GetString(a + "rope.scaling.type");
    if (!type.ok()) return type.status();
    if (*type == "linear") {
      rs.type = Type::kLinear;
    } else if (*type == "yarn") {
      rs.type = Type::kYarn;
    } else if (*type != "none") {
      return absl::UnimplementedError(
          absl::StrCat(f.path(), ": RoPE scaling '", *type,
                       "' is not supported (none, linear, yarn, rope_freqs)"));
    }
  }
  if (rs.type != Type::kNone) {
    auto factor = Float(f, a + "rope.scaling.factor", 1.0);
    if (!factor.ok()) return factor.status();
    rs.factor = *factor;
    if (rs.factor < 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": rope.scaling.factor ", rs.factor, " < 1"));
    }
    for (auto [key, out] :
         {std::pair{"rope.scaling.yarn_beta_fast", &rs.beta_fast},
          std::pair{"rope.scaling.yarn_beta_slow", &rs.beta_slow}}) {
      auto v = Float(f, a + key, *out);
      if (!v.ok()) return v.status();
      *out = *v;
    }
    if (f.Has(a + "rope.scaling.original_context_length")) {
      auto n = f.GetInt(a + "rope.scaling.original_context_length");
      if (!n.ok()) return n.status();
      if (*n <= 0 || *n > (int64_t{1} << 30)) {
        return absl::InvalidArgumentError(absl::StrCat(
            f.path(), ": rope.scaling.original_context_length = ", *n));
      }
      rs.original_max_position = static_cast<int>(*n);
    }
    // llama.cpp multiplies YaRN's 0.1 ln(factor) + 1 by attn_factor.
    auto attn = Float(f, a + "rope.scaling.attn_factor", 1.0);
    if (!attn.ok()) return attn.status();
    if (rs.type == Type::kYarn && *attn != 1.0) {
      rs.attention_factor = *attn * (0.1 * std::log(rs.factor) + 1.0);
    }
  }
  if (const GgufTensorInfo* t = f.FindTensor("rope_freqs.weight")) {
    if (t->type != static_cast<uint32_t>(GgmlType::kF32) ||
        t->dims != std::vector<int64_t>{head_dim / 2}) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": rope_freqs.weight must be f32 [",
                       head_dim / 2, "] (Llama 3.1's per-pair factors)"));
    }
    c->rope_freq_factors.resize(head_dim / 2);
    std::memcpy(c->rope_freq_factors.data(), t->data, 4 * (head_dim / 2));
    for (float x : c->rope_freq_factors) {
      if (!(x > 0) || !std::isfinite(x)) {
        return absl::InvalidArgumentError(absl::StrCat(
            f.path(), ": rope_freqs.weight holds a non-positive factor"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::model::internal
