#include "model/config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/config_features.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using json = nlohmann::json;

absl::Status KeyError(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\": ", what));
}

// Reads an integer key; nullopt when absent (or null).
absl::StatusOr<std::optional<int64_t>> GetInt(const json& j,
                                              const std::string& key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<int64_t>();
  if (it->is_number_integer()) {
    return std::optional<int64_t>(it->get<int64_t>());
  }
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
      return std::optional<int64_t>(static_cast<int64_t>(v));
    }
  }
  return KeyError(key, absl::StrCat("expected an integer, got ", it->dump()));
}

absl::Status ReadIntField(const json& j, const std::string& key, bool required,
                          int* out) {
  auto v = GetInt(j, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) {
    if (required) return KeyError(key, "missing");
    return absl::OkStatus();
  }
  int64_t x = **v;
  if (x < INT32_MIN || x > INT32_MAX) return KeyError(key, "out of range");
  *out = static_cast<int>(x);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<double>> GetNumber(const json& j,
                                                const std::string& key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) {
    return KeyError(key, absl::StrCat("expected a number, got ", it->dump()));
  }
  return std::optional<double>(it->get<double>());
}

// A token id key: a number, or a list whose first element is used (some HF
// configs list several EOS ids).
absl::Status ReadTokenId(const json& j, const std::string& key, int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_array()) {
    if (it->empty()) return KeyError(key, "empty list");
    json first = json::object();
    first[key] = (*it)[0];
    return ReadIntField(first, key, false, out);
  }
  return ReadIntField(j, key, false, out);
}

// A head dim key: a number (all layers) or a list of num_layers numbers.
// Returns an empty vector when absent.
absl::StatusOr<std::vector<int>> ReadDims(const json& j, const std::string& key,
                                          int num_layers, int min_value = 1) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::vector<int>();
  std::vector<int> dims;
  auto one = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer()) {
      return KeyError(key, absl::StrCat("expected an integer, got ", v.dump()));
    }
    int64_t x = v.get<int64_t>();
    if (x < min_value || x > INT32_MAX) {
      return KeyError(key, absl::StrCat(min_value > 0 ? "must be positive"
                                                      : "must not be negative",
                                        ", got ", x));
    }
    dims.push_back(static_cast<int>(x));
    return absl::OkStatus();
  };
  if (it->is_array()) {
    if (static_cast<int>(it->size()) != num_layers) {
      return KeyError(
          key, absl::StrCat("list has ", it->size(),
                            " entries, num_hidden_layers is ", num_layers));
    }
    for (const json& v : *it) {
      absl::Status s = one(v);
      if (!s.ok()) return s;
    }
  } else {
    absl::Status s = one(*it);
    if (!s.ok()) return s;
    dims.assign(num_layers, dims[0]);
  }
  return dims;
}

// Partial rotary: our "rope_dims" (a number or a per-layer list), else HF's
// "partial_rotary_factor" (rotary dims = int(d_qk * factor), rounded down to
// even as HF's rotate-half needs). Absent, or every layer fully rotary:
// c->rope_dims stays empty. Needs c->qk_head_dim.
absl::Status ReadRopeDims(const json& j, ModelConfig* c) {
  auto dims = ReadDims(j, "rope_dims", c->num_layers, /*min_value=*/0);
  if (!dims.ok()) return dims.status();
  if (dims->empty()) {
    auto it = j.find("partial_rotary_factor");
    if (it != j.end() && !it->is_null()) {
      if (!it->is_number()) {
        return KeyError("partial_rotary_factor",
                        absl::StrCat("expected a number, got ", it->dump()));
      }
      const double f = it->get<double>();
      if (!(f >= 0.0 && f <= 1.0)) {
        return KeyError("partial_rotary_factor",
                        absl::StrCat("must be in [0, 1], got ", f));
      }
      for (int d : c->qk_head_dim) {
        dims->push_back(static_cast<int>(d * f) / 2 * 2);
      }
    }
  }
  if (*dims != c->qk_head_dim) c->rope_dims = *std::move(dims);
  return absl::OkStatus();
}

// The shortest decimal that reads back as the same float.
double ShortestFloat(float x) {
  for (int prec = 1; prec <= 9; ++prec) {
    std::string s = absl::StrFormat("%.*g", prec, x);
    double d = std::strtod(s.c_str(), nullptr);
    if (static_cast<float>(d) == x) return d;
  }
  return x;
}

json DimsToJson(const std::vector<int>& dims) {
  bool uniform = true;
  for (int d : dims) uniform = uniform && d == dims[0];
  if (uniform && !dims.empty()) return json(dims[0]);
  return json(dims);
}

}  // namespace

namespace {
absl::StatusOr<ModelConfig> FromJsonUnnamed(const std::string& json_text);
}  // namespace

// Errors name their source: "config.json: key ...". (The same checks on a
// GGUF header name the file instead: model/gguf_loader.cc.)
absl::StatusOr<ModelConfig> ModelConfig::FromJson(
    const std::string& json_text) {
  absl::StatusOr<ModelConfig> c = FromJsonUnnamed(json_text);
  if (c.ok() || absl::StartsWith(c.status().message(), "config.json")) {
    return c;
  }
  return absl::Status(c.status().code(),
                      absl::StrCat("config.json: ", c.status().message()));
}

namespace {
absl::StatusOr<ModelConfig> FromJsonUnnamed(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: invalid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig c;
  absl::Status s;
  try {
    if (!(s = ReadIntField(j, "hidden_size", true, &c.hidden_size)).ok() ||
        !(s = ReadIntField(j, "intermediate_size", true, &c.intermediate_size))
             .ok() ||
        !(s = ReadIntField(j, "num_hidden_layers", true, &c.num_layers)).ok() ||
        !(s = ReadIntField(j, "num_attention_heads", true, &c.num_heads))
             .ok() ||
        !(s = ReadIntField(j, "vocab_size", true, &c.vocab_size)).ok()) {
      return s;
    }
    c.num_kv_heads = c.num_heads;
    c.max_position_embeddings = 2048;
    if (!(s = ReadIntField(j, "num_key_value_heads", false, &c.num_kv_heads))
             .ok() ||
        !(s = ReadIntField(j, "max_position_embeddings", false,
                           &c.max_position_embeddings))
             .ok() ||
        !(s = ReadTokenId(j, "bos_token_id", &c.bos_token_id)).ok() ||
        !(s = ReadTokenId(j, "eos_token_id", &c.eos_token_id)).ok()) {
      return s;
    }
    // Before any per-layer list is built.
    if (!(s = c.CheckBounds()).ok()) {
      return s;
    }
    if (auto it = j.find("eos_token_id"); it != j.end() && it->is_array()) {
      for (size_t i = 1; i < it->size(); ++i) {
        if (!(*it)[i].is_number_integer()) {
          return KeyError("eos_token_id",
                          absl::StrCat("expected integers, got ", it->dump()));
        }
        c.extra_eos_token_ids.push_back((*it)[i].get<int>());
      }
    }
    for (const char* key :
         {"hidden_size", "intermediate_size", "num_hidden_layers",
          "num_attention_heads", "num_key_value_heads", "vocab_size",
          "max_position_embeddings"}) {
      int v = 0;
      if (!(s = ReadIntField(j, key, false, &v)).ok()) return s;
      if (j.contains(key) && !j[key].is_null() && v <= 0) {
        return KeyError(key, absl::StrCat("must be positive, got ", v));
      }
    }

    auto eps = GetNumber(j, "rms_norm_eps");
    if (!eps.ok()) return eps.status();
    if (eps->has_value()) {
      if (!(**eps > 0)) return KeyError("rms_norm_eps", "must be positive");
      c.rms_norm_eps = static_cast<float>(**eps);
    }
    auto theta = GetNumber(j, "rope_theta");
    if (!theta.ok()) return theta.status();
    if (theta->has_value()) {
      if (!(**theta > 0)) return KeyError("rope_theta", "must be positive");
      c.rope_theta = **theta;
    }
    if (auto it = j.find("tie_word_embeddings");
        it != j.end() && !it->is_null()) {
      if (!it->is_boolean()) {
        return KeyError("tie_word_embeddings",
                        absl::StrCat("expected a boolean, got ", it->dump()));
      }
      c.tie_word_embeddings = it->get<bool>();
    }
    if (auto it = j.find("rope_scheme"); it != j.end() && !it->is_null()) {
      if (!it->is_string()) {
        return KeyError("rope_scheme",
                        absl::StrCat("expected a string, got ", it->dump()));
      }
      std::string v = it->get<std::string>();
      if (v == "standard") {
        c.rope_scheme = RopeScheme::kStandard;
      } else if (v == "frequency_aware") {
        c.rope_scheme = RopeScheme::kFrequencyAware;
      } else {
        return KeyError("rope_scheme",
                        absl::StrCat("unknown scheme \"", v,
                                     "\" (expected \"standard\" or "
                                     "\"frequency_aware\")"));
      }
    }

    // Head dims. Precedence: qk_head_dim / vo_head_dim; else the reduce
    // ratios of the KV-Latent code (head_dim / ratio); else HF's head_dim;
    // else hidden_size / num_attention_heads.
    int base_head_dim = 0;
    if (!(s = ReadIntField(j, "head_dim", false, &base_head_dim)).ok()) {
      return s;
    }
    if (base_head_dim == 0) {
      if (c.hidden_size % c.num_heads != 0) {
        if (!j.contains("qk_head_dim") || !j.contains("vo_head_dim")) {
          return KeyError("num_attention_heads",
                          absl::StrCat("hidden_size ", c.hidden_size,
                                       " is not a multiple of ", c.num_heads,
                                       " and no head dims are given"));
        }
      } else {
        base_head_dim = c.hidden_size / c.num_heads;
      }
    } else if (base_head_dim < 0) {
      return KeyError("head_dim", "must be positive");
    }
    struct DimKey {
      const char* key;
      const char* ratio_key;
      std::vector<int>* out;
    };
    for (DimKey dk :
         {DimKey{"qk_head_dim", "reduce_ratio_qk", &c.qk_head_dim},
          DimKey{"vo_head_dim", "reduce_ratio_vo", &c.vo_head_dim}}) {
      auto dims = ReadDims(j, dk.key, c.num_layers);
      if (!dims.ok()) return dims.status();
      if (!dims->empty()) {
        *dk.out = *std::move(dims);
        continue;
      }
      int ratio = 1;
      if (!(s = ReadIntField(j, dk.ratio_key, false, &ratio)).ok()) return s;
      if (ratio <= 0 || base_head_dim % ratio != 0) {
        return KeyError(dk.ratio_key,
                        absl::StrCat("must divide the head dim ", base_head_dim,
                                     ", got ", ratio));
      }
      dk.out->assign(c.num_layers, base_head_dim / ratio);
    }
    if (!(s = ReadRopeDims(j, &c)).ok()) return s;
    if (!(s = internal::ReadArchFeatures(j, &c)).ok()) return s;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", e.what()));
  }
  s = c.Validate();
  if (!s.ok()) return s;
  return c;
}
}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromDir(const std::string& dir) {
  std::string path = dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  auto c = FromJson(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(),
                        absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

std::string ModelConfig::ToJson() const {
  json j = json::object();
  j["architectures"] = json::array({"LlamaForCausalLM"});
  j["model_type"] = "llama";
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = ShortestFloat(rms_norm_eps);
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["qk_head_dim"] = DimsToJson(qk_head_dim);
  j["vo_head_dim"] = DimsToJson(vo_head_dim);
  if (!rope_dims.empty()) j["rope_dims"] = DimsToJson(rope_dims);
  j["rope_scheme"] = rope_scheme == RopeScheme::kFrequencyAware
                         ? "frequency_aware"
                         : "standard";
  j["bos_token_id"] = bos_token_id;
  if (extra_eos_token_ids.empty()) {
    j["eos_token_id"] = eos_token_id;
  } else {
    json ids = json::array({eos_token_id});
    for (int id : extra_eos_token_ids) ids.push_back(id);
    j["eos_token_id"] = ids;
  }
  internal::WriteArchFeatures(*this, &j);
  return j.dump(2) + "\n";
}

absl::Status ModelConfig::CheckBounds() const {
  struct Bound {
    const char* key;
    int64_t value, max;
  };
  const Bound bounds[] = {
      {"hidden_size", hidden_size, int64_t{1} << 16},
      {"intermediate_size", intermediate_size, int64_t{1} << 18},
      {"num_hidden_layers", num_layers, 1024},
      {"num_attention_heads", num_heads, 1024},
      {"num_key_value_heads", num_kv_heads, 1024},
      {"vocab_size", vocab_size, int64_t{1} << 22},
      {"max_position_embeddings", max_position_embeddings, int64_t{1} << 24},
  };
  for (const Bound& b : bounds) {
    if (b.value > b.max) {
      return KeyError(b.key,
                      absl::StrCat(b.value, " is above the supported ", b.max));
    }
  }
  if (qk_norm_dim > 4096) {
    return KeyError("qk_norm_dim",
                    absl::StrCat(qk_norm_dim, " is above the supported 4096"));
  }
  for (const auto* dims : {&qk_head_dim, &vo_head_dim}) {
    for (const int d : *dims) {
      if (d > 4096) {
        return KeyError(dims == &qk_head_dim ? "qk_head_dim" : "vo_head_dim",
                        absl::StrCat(d, " is above the supported 4096"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* key, int64_t v) -> absl::Status {
    if (v <= 0) return KeyError(key, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  absl::Status s;
  if (!(s = positive("hidden_size", hidden_size)).ok() ||
      !(s = positive("intermediate_size", intermediate_size)).ok() ||
      !(s = positive("num_hidden_layers", num_layers)).ok() ||
      !(s = positive("num_attention_heads", num_heads)).ok() ||
      !(s = positive("num_key_value_heads", num_kv_heads)).ok() ||
      !(s = positive("vocab_size", vocab_size)).ok() ||
      !(s = positive("max_position_embeddings", max_position_embeddings))
           .ok()) {
    return s;
  }
  if (!(s = CheckBounds()).ok()) return s;
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) {
    return KeyError("rms_norm_eps", "must be positive and finite");
  }
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    return KeyError("rope_theta", "must be positive and finite");
  }
  if (num_heads % num_kv_heads != 0) {
    return KeyError("num_key_value_heads",
                    absl::StrCat("num_attention_heads ", num_heads,
                                 " is not a multiple of num_key_value_heads ",
                                 num_kv_heads));
  }
  if (static_cast<int>(qk_head_dim.size()) != num_layers) {
    return KeyError(
        "qk_head_dim",
        absl::StrCat("has ", qk_head_dim.size(),
                     " entries, num_hidden_layers is ", num_layers));
  }
  if (static_cast<int>(vo_head_dim.size()) != num_layers) {
    return KeyError(
        "vo_head_dim",
        absl::StrCat("has ", vo_head_dim.size(),
                     " entries, num_hidden_layers is ", num_layers));
  }
  const int multiple = rope_scheme == RopeScheme::kFrequencyAware ? 4 : 2;
  for (int l = 0; l < num_layers; ++l) {
    if (qk_head_dim[l] <= 0 || qk_head_dim[l] % multiple != 0) {
      return KeyError("qk_head_dim",
                      absl::StrCat("layer ", l, ": ", qk_head_dim[l],
                                   " must be a positive multiple of ", multiple,
                                   rope_scheme == RopeScheme::kFrequencyAware
                                       ? " (frequency_aware RoPE)"
                                       : " (RoPE pairs)"));
    }
    if (vo_head_dim[l] <= 0) {
      return KeyError(
          "vo_head_dim",
          absl::StrCat("layer ", l, ": ", vo_head_dim[l], " must be positive"));
    }
  }
  if (!rope_dims.empty()) {
    if (static_cast<int>(rope_dims.size()) != num_layers) {
      return KeyError(
          "rope_dims",
          absl::StrCat("has ", rope_dims.size(),
                       " entries, num_hidden_layers is ", num_layers));
    }
    if (rope_scheme == RopeScheme::kFrequencyAware) {
      return KeyError("rope_dims",
                      "partial rotary needs the standard rope_scheme");
    }
    for (int l = 0; l < num_layers; ++l) {
      if (rope_dims[l] < 0 || rope_dims[l] > qk_head_dim[l] ||
          rope_dims[l] % 2 != 0) {
        return KeyError(
            "rope_dims",
            absl::StrCat("layer ", l, ": ", rope_dims[l],
                         " must be even and within [0, qk_head_dim ",
                         qk_head_dim[l], "]"));
      }
    }
  }
  if (!(s = internal::ValidateArchFeatures(*this)).ok()) return s;
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return KeyError("bos_token_id",
                    absl::StrCat(bos_token_id, " is outside the vocabulary"));
  }
  for (int id : extra_eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return KeyError("eos_token_id",
                      absl::StrCat(id, " is outside the vocabulary"));
    }
  }
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    return KeyError("eos_token_id",
                    absl::StrCat(eos_token_id, " is outside the vocabulary"));
  }
  return absl::OkStatus();
}

int64_t ModelConfig::KvValuesPerTokenLayer(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(qk_head_dim.size()) ||
      layer >= static_cast<int>(vo_head_dim.size())) {
    return 0;
  }
  return static_cast<int64_t>(num_kv_heads) *
         (qk_head_dim[layer] + vo_head_dim[layer]);
}

int64_t ModelConfig::KvValuesPerToken() const {
  int64_t total = 0;
  for (int l = 0; l < num_layers; ++l) total += KvValuesPerTokenLayer(l);
  return total;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t h = hidden_size;
  int64_t total = static_cast<int64_t>(vocab_size) * h;  // embeddings
  if (!tie_word_embeddings) total += static_cast<int64_t>(vocab_size) * h;
  total += h;  // final norm
  for (int l = 0; l < num_layers; ++l) {
    const int64_t dqk =
        l < static_cast<int>(qk_head_dim.size()) ? qk_head_dim[l] : head_dim();
    const int64_t dvo =
        l < static_cast<int>(vo_head_dim.size()) ? vo_head_dim[l] : head_dim();
    // q/k heads as projected (qk_norm_dim when mapped after their norm).
    const int64_t dp = qk_norm_dim > 0 ? qk_norm_dim : dqk;
    total += 2 * h;                                         // norms
    total += (num_heads + num_kv_heads) * dp * h;           // q, k
    total += num_kv_heads * dvo * h + h * num_heads * dvo;  // v, o
    total += 3 * h * intermediate_size;                     // mlp
    if (qk_norm) total += 2 * dp;
    if (qk_norm_dim > 0) total += (num_heads + num_kv_heads) * dqk * dp;
    if (qkv_bias) total += (num_heads + num_kv_heads) * dp + num_kv_heads * dvo;
    if (post_norms) total += 2 * h;
  }
  return total;
}

ModelConfig ModelConfig::Llama(int hidden, int intermediate, int layers,
                               int heads, int kv_heads, int vocab, int context,
                               double rope_theta) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = context;
  c.rope_theta = rope_theta;
  c.qk_head_dim.assign(layers, hidden / heads);
  c.vo_head_dim.assign(layers, hidden / heads);
  return c;
}

}  // namespace latentkv::model
