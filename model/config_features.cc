#include "model/config_features.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace latentkv::model::internal {
namespace {

using json = nlohmann::json;

absl::Status KeyError(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\": ", what));
}

const json* Find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) {
    return KeyError(key, absl::StrCat("expected a boolean, got ", v->dump()));
  }
  *out = v->get<bool>();
  return absl::OkStatus();
}

// A finite number >= 0 (> 0 when `positive`).
absl::Status ReadNumber(const json& j, const char* key, bool positive,
                        double* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) {
    return KeyError(key, absl::StrCat("expected a number, got ", v->dump()));
  }
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < 0 || (positive && x == 0) || x > 1e30) {
    return KeyError(key, absl::StrCat(positive ? "must be positive"
                                               : "must be "
                                                 ">= 0",
                                      " and finite, got ", v->dump()));
  }
  *out = x;
  return absl::OkStatus();
}

// HF "rope_scaling" ({"rope_type" or "type": linear | llama3 | yarn, ...})
// and our "rope_freq_factors".
absl::Status ReadRopeScaling(const json& j, ModelConfig* c) {
  if (const json* f = Find(j, "rope_freq_factors"); f != nullptr) {
    if (!f->is_array() || f->empty() || f->size() > 4096) {
      return KeyError("rope_freq_factors", "expected a list of numbers");
    }
    for (const json& v : *f) {
      // Positive and finite as the f32 the table holds (1e125 is a finite
      // double but an infinite float).
      const float x = v.is_number() ? v.get<float>() : 0.0f;
      if (!(x > 0) || !std::isfinite(x)) {
        return KeyError(
            "rope_freq_factors",
            absl::StrCat("entries must be positive and finite, got ",
                         v.dump().substr(0, 40)));
      }
      c->rope_freq_factors.push_back(x);
    }
  }
  const json* r = Find(j, "rope_scaling");
  if (r == nullptr) return absl::OkStatus();
  if (!r->is_object()) {
    return KeyError("rope_scaling", absl::StrCat("expected an object, got ",
                                                 r->dump().substr(0, 80)));
  }
  const json* t = Find(*r, "rope_type");
  if (t == nullptr) t = Find(*r, "type");
  const std::string type =
      t != nullptr && t->is_string() ? t->get<std::string>() : "";
  using Type = ModelConfig::RopeScaling::Type;
  ModelConfig::RopeScaling& rs = c->rope_scaling;
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    rs.type = Type::kLinear;
  } else if (type == "llama3") {
    rs.type = Type::kLlama3;
  } else if (type == "yarn") {
    rs.type = Type::kYarn;
  } else {
    return KeyError("rope_scaling",
                    absl::StrCat("unsupported rope_type \"", type,
                                 "\" (linear, llama3 or yarn)"));
  }
  absl::Status s;
  for (auto [key, out, positive] :
       {std::tuple{"factor", &rs.factor, true},
        std::tuple{"low_freq_factor", &rs.low_freq_factor, true},
        std::tuple{"high_freq_factor", &rs.high_freq_factor, true},
        std::tuple{"beta_fast", &rs.beta_fast, true},
        std::tuple{"beta_slow", &rs.beta_slow, true},
        std::tuple{"attention_factor", &rs.attention_factor, false}}) {
    if (!(s = ReadNumber(*r, key, positive, out)).ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("key \"rope_scaling\": ", s.message()));
    }
  }
  double orig = 0;
  if (!(s = ReadNumber(*r, "original_max_position_embeddings", false, &orig))
           .ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"rope_scaling\": ", s.message()));
  }
  rs.original_max_position = static_cast<int>(std::min(orig, 1e9));
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadArchFeatures(const json& j, ModelConfig* c) {
  if (const json* t = Find(j, "model_type");
      t != nullptr && t->is_string() &&
      absl::StartsWith(t->get<std::string>(), "gemma")) {
    return absl::UnimplementedError(absl::StrCat(
        "key \"model_type\": HF ", t->get<std::string>(),
        " checkpoints are not supported (their norm weights are stored as "
        "w - 1); load the model's GGUF file"));
  }
  // HF model types whose architecture implies a feature without a key.
  if (const json* t = Find(j, "model_type"); t != nullptr && t->is_string()) {
    const std::string type = t->get<std::string>();
    if (type == "qwen2") c->qkv_bias = true;
    if (type == "qwen3") c->qk_norm = true;
  }
  if (const json* u = Find(j, "use_sliding_window");
      u != nullptr && u->is_boolean() && u->get<bool>()) {
    return absl::UnimplementedError(
        "key \"use_sliding_window\": Qwen2's sliding window is not supported");
  }
  for (const char* key : {"hidden_act", "hidden_activation"}) {
    const json* v = Find(j, key);
    if (v == nullptr) continue;
    const std::string name = v->is_string() ? v->get<std::string>() : "";
    if (name == "silu") {
      c->hidden_act = Activation::kSilu;
    } else if (name == "gelu_pytorch_tanh") {
      c->hidden_act = Activation::kGeluTanh;
    } else {
      return KeyError(key, absl::StrCat("unsupported activation ", v->dump(),
                                        " (silu or gelu_pytorch_tanh)"));
    }
    break;
  }
  absl::Status s;
  if (!(s = ReadBool(j, "qk_norm", &c->qk_norm)).ok()) return s;
  if (const json* d = Find(j, "qk_norm_dim"); d != nullptr) {
    if (!d->is_number_integer() || d->get<int64_t>() < 0 ||
        d->get<int64_t>() > 4096) {
      return KeyError("qk_norm_dim", absl::StrCat("must be an integer in [0, "
                                                  "4096], got ",
                                                  d->dump().substr(0, 40)));
    }
    c->qk_norm_dim = static_cast<int>(d->get<int64_t>());
  }
  if (!(s = ReadBool(j, "attention_bias", &c->qkv_bias)).ok()) return s;
  if (!(s = ReadRopeScaling(j, c)).ok()) return s;
  if (!(s = ReadBool(j, "post_norms", &c->post_norms)).ok()) return s;
  double scale = c->embedding_scale;
  if (!(s = ReadNumber(j, "embedding_scale", true, &scale)).ok()) return s;
  c->embedding_scale = static_cast<float>(scale);
  double qpas = c->query_pre_attn_scalar;
  if (!(s = ReadNumber(j, "query_pre_attn_scalar", false, &qpas)).ok()) {
    return s;
  }
  c->query_pre_attn_scalar = static_cast<float>(qpas);
  if (!(s = ReadNumber(j, "rope_local_base_freq", false, &c->rope_local_theta))
           .ok()) {
    return s;
  }
  if (const json* w = Find(j, "layer_sliding_window"); w != nullptr) {
    if (!w->is_array() || static_cast<int>(w->size()) != c->num_layers) {
      return KeyError("layer_sliding_window",
                      absl::StrCat("expected a list of ", c->num_layers,
                                   " integers, got ", w->dump().substr(0, 80)));
    }
    c->sliding_window.clear();
    for (const json& v : *w) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
          v.get<int64_t>() > INT32_MAX) {
        return KeyError(
            "layer_sliding_window",
            absl::StrCat("entries must be integers >= 0, got ", v.dump()));
      }
      c->sliding_window.push_back(static_cast<int>(v.get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

void WriteArchFeatures(const ModelConfig& c, json* j) {
  if (!c.has_arch_features()) return;
  (*j)["model_type"] = "latentkv";  // not HF Llama: the keys below matter
  (*j)["hidden_act"] =
      c.hidden_act == Activation::kGeluTanh ? "gelu_pytorch_tanh" : "silu";
  (*j)["qk_norm"] = c.qk_norm;
  if (c.qk_norm_dim > 0) (*j)["qk_norm_dim"] = c.qk_norm_dim;
  (*j)["post_norms"] = c.post_norms;
  (*j)["embedding_scale"] = c.embedding_scale;
  (*j)["query_pre_attn_scalar"] = c.query_pre_attn_scalar;
  (*j)["rope_local_base_freq"] = c.rope_local_theta;
  if (!c.sliding_window.empty()) {
    (*j)["layer_sliding_window"] = c.sliding_window;
  }
  (*j)["attention_bias"] = c.qkv_bias;
  if (!c.rope_freq_factors.empty()) {
    (*j)["rope_freq_factors"] = c.rope_freq_factors;
  }
  using Type = ModelConfig::RopeScaling::Type;
  const ModelConfig::RopeScaling& rs = c.rope_scaling;
  if (rs.type != Type::kNone) {
    (*j)["rope_scaling"] = {
        {"rope_type", rs.type == Type::kLinear   ? "linear"
                      : rs.type == Type::kLlama3 ? "llama3"
                                                 : "yarn"},
        {"factor", rs.factor},
        {"low_freq_factor", rs.low_freq_factor},
        {"high_freq_factor", rs.high_freq_factor},
        {"original_max_position_embeddings", rs.original_max_position},
        {"beta_fast", rs.beta_fast},
        {"beta_slow", rs.beta_slow},
        {"attention_factor", rs.attention_factor}};
  }
}

absl::Status ValidateArchFeatures(const ModelConfig& c) {
  if (c.qk_norm_dim < 0 || (c.qk_norm_dim > 0 && !c.qk_norm)) {
    return KeyError("qk_norm_dim", "must be >= 0, and set only with qk_norm");
  }
  if (!(c.embedding_scale > 0) || !std::isfinite(c.embedding_scale)) {
    return KeyError("embedding_scale", "must be positive and finite");
  }
  if (!(c.query_pre_attn_scalar >= 0) ||
      !std::isfinite(c.query_pre_attn_scalar)) {
    return KeyError("query_pre_attn_scalar", "must be >= 0 and finite");
  }
  if (!(c.rope_local_theta >= 0) || !std::isfinite(c.rope_local_theta)) {
    return KeyError("rope_local_base_freq", "must be >= 0 and finite");
  }
  for (float x : c.rope_freq_factors) {
    if (!(x > 0) || !std::isfinite(x)) {
      return KeyError("rope_freq_factors",
                      "entries must be positive and finite");
    }
  }
  if (!c.rope_freq_factors.empty()) {
    for (int l = 0; l < c.num_layers; ++l) {
      if (static_cast<size_t>(c.rope_dim(l)) !=
          2 * c.rope_freq_factors.size()) {
        return KeyError(
            "rope_freq_factors",
            absl::StrCat("has ", c.rope_freq_factors.size(), " entries; layer ",
                         l, " has ", c.rope_dim(l) / 2, " rotary pairs"));
      }
    }
  }
  if ((c.rope_scaling.type != ModelConfig::RopeScaling::Type::kNone ||
       !c.rope_freq_factors.empty()) &&
      c.rope_scheme != RopeScheme::kStandard) {
    return KeyError("rope_scaling", "applies to the standard RoPE scheme only");
  }
  if (c.rope_scaling.type != ModelConfig::RopeScaling::Type::kNone &&
      !(c.rope_scaling.factor >= 1.0 && std::isfinite(c.rope_scaling.factor))) {
    return KeyError("rope_scaling", "factor must be >= 1");
  }
  if (c.rope_scaling.type == ModelConfig::RopeScaling::Type::kLlama3 &&
      !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor)) {
    return KeyError("rope_scaling",
                    "high_freq_factor must exceed low_freq_factor");
  }
  if (!c.sliding_window.empty()) {
    if (static_cast<int>(c.sliding_window.size()) != c.num_layers) {
      return KeyError(
          "layer_sliding_window",
          absl::StrCat("has ", c.sliding_window.size(),
                       " entries, num_hidden_layers is ", c.num_layers));
    }
    for (int w : c.sliding_window) {
      if (w < 0) return KeyError("layer_sliding_window", "must be >= 0");
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::model::internal

namespace latentkv::model {

float ModelConfig::attention_scale(int layer) const {
  const double d =
      query_pre_attn_scalar > 0 ? query_pre_attn_scalar : qk_head_dim.at(layer);
  double mscale = 1.0;
  if (rope_scaling.type == RopeScaling::Type::kYarn && rope_scaled(layer)) {
    mscale = rope_scaling.attention_factor > 0
                 ? rope_scaling.attention_factor
                 : (rope_scaling.factor > 1
                        ? 0.1 * std::log(rope_scaling.factor) + 1.0
                        : 1.0);
  }
  return static_cast<float>(mscale * mscale / std::sqrt(d));
}

bool ModelConfig::has_arch_features() const {
  bool windows = false;
  for (int w : sliding_window) windows = windows || w > 0;
  return hidden_act != Activation::kSilu || qk_norm || post_norms ||
         embedding_scale != 1.0f || query_pre_attn_scalar != 0.0f || windows ||
         rope_local_theta != 0.0 || qkv_bias ||
         rope_scaling.type != RopeScaling::Type::kNone ||
         !rope_freq_factors.empty();
}

}  // namespace latentkv::model
