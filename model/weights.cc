#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/gguf_loader.h"
#include "model/rope_scaling.h"

namespace latentkv::model {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Finds `name` and checks its shape.
absl::StatusOr<const TensorEntry*> Lookup(const SafetensorsFile& file,
                                          const std::string& name,
                                          const std::vector<int64_t>& shape) {
  const TensorEntry* e = file.Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        name, ": missing tensor (expected shape ", ShapeString(shape), ")"));
  }
  if (e->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected shape ",
                                                   ShapeString(shape), ", got ",
                                                   ShapeString(e->shape)));
  }
  return e;
}

// A view into the mapping when the dtype matches and the data is naturally
// aligned; otherwise an owned converted copy.
absl::StatusOr<Tensor> MakeTensor(const TensorEntry& e, DType dtype,
                                  bool force_copy) {
  Tensor t;
  t.dtype = dtype;
  t.shape = e.shape;
  const int64_t n = e.numel();
  if (IsBlockQuantized(dtype)) {
    const int64_t cols = e.shape.empty() ? 1 : e.shape.back();
    absl::Status s = ConvertMatrix(
        e.data, e.dtype, n / std::max<int64_t>(cols, 1), cols, dtype, &t.owned);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(e.name, ": ", s.message()));
    }
    t.data = t.owned.data();
    return t;
  }
  const int esize = DTypeSize(dtype);
  const bool aligned =
      reinterpret_cast<uintptr_t>(e.data) % static_cast<uintptr_t>(esize) == 0;
  if (e.dtype == dtype && aligned && !force_copy) {
    t.data = e.data;
    return t;
  }
  t.owned.resize(static_cast<size_t>(n) * esize);
  if (e.dtype == dtype) {
    std::memcpy(t.owned.data(), e.data, t.owned.size());
  } else if (dtype == DType::kF32) {
    ConvertToF32(e.data, e.dtype, n, reinterpret_cast<float*>(t.owned.data()));
  } else {
    // Through f32 in bounded chunks (f16 <-> bf16).
    constexpr int64_t kChunk = 1 << 16;
    std::vector<float> tmp(static_cast<size_t>(std::min<int64_t>(n, kChunk)));
    const int in_size = DTypeSize(e.dtype);
    for (int64_t i = 0; i < n; i += kChunk) {
      const int64_t m = std::min<int64_t>(kChunk, n - i);
      ConvertToF32(e.data + i * in_size, e.dtype, m, tmp.data());
      ConvertFromF32(tmp.data(), m, dtype, t.owned.data() + i * esize);
    }
  }
  t.data = t.owned.data();
  return t;
}

absl::Status Load(const SafetensorsFile& file, const std::string& name,
                  const std::vector<int64_t>& shape, DType dtype,
                  bool force_copy, Tensor* out) {
  auto e = Lookup(file, name, shape);
  if (!e.ok()) return e.status();
  auto t = MakeTensor(**e, dtype, force_copy);
  if (!t.ok()) return t.status();
  *out = std::move(*t);
  return absl::OkStatus();
}

}  // namespace

absl::Status ConvertMatrix(const void* src, DType from, int64_t rows,
                           int64_t cols, DType to, std::vector<uint8_t>* out) {
  for (DType d : {from, to}) {
    if (IsBlockQuantized(d) && cols % DTypeBlockElems(d) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "width ", cols, " is not a multiple of ", DTypeBlockElems(d),
          " (needed for ", std::string(DTypeName(d)), ")"));
    }
  }
  const int64_t in_row = DTypeRowBytes(from, cols);
  const int64_t out_row = DTypeRowBytes(to, cols);
  out->assign(static_cast<size_t>(rows * out_row), 0);
  std::vector<float> tmp(static_cast<size_t>(cols));
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToF32(in + r * in_row, from, cols, tmp.data());
    ConvertFromF32(tmp.data(), cols, to, out->data() + r * out_row);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<DType>> ParseWeightsDType(std::string_view name) {
  if (name == "auto") return std::optional<DType>();
  std::optional<DType> d = ParseDType(name);
  if (!d || *d == DType::kF16 || *d == DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights dtype must be auto, f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
        "q2_K, q3_K, q4_K, q5_K or q6_K, got '",
        std::string(name), "'"));
  }
  return d;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> DefaultRopeInvFreq(const ModelConfig& config, int layer) {
  const int d = config.rope_dim(layer);
  const double base = config.window(layer) > 0 && config.rope_local_theta > 0
                          ? config.rope_local_theta
                          : config.rope_theta;
  std::vector<float> inv(d / 2);
  if (config.rope_scheme == RopeScheme::kStandard) {
    for (int j = 0; j < d / 2; ++j) {
      inv[j] = static_cast<float>(
          std::pow(base, -static_cast<double>(2 * j) / static_cast<double>(d)));
    }
    ApplyRopeScaling(config, layer, d, &inv);
    return inv;
  }
  // Frequency-aware: e = concat(arange(d/4, 3d/4, 2), arange(3d/4, d, 1)) / d.
  std::vector<int> e;
  for (int k = d / 4; k < 3 * d / 4; k += 2) e.push_back(k);
  for (int k = 3 * d / 4; k < d; ++k) e.push_back(k);
  for (int j = 0; j < d / 2 && j < static_cast<int>(e.size()); ++j) {
    inv[j] = static_cast<float>(
        std::pow(base, -static_cast<double>(e[j]) / static_cast<double>(d)));
  }
  return inv;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(
    const std::string& dir, const LoadOptions& options) {
  auto gguf = ResolveModelPath(dir);
  if (!gguf.ok()) return gguf.status();
  if (*gguf) {
    auto f = GgufFile::Open(**gguf);
    if (!f.ok()) return f.status();
    return LoadGgufModel(std::shared_ptr<const GgufFile>(std::move(*f)),
                         options);
  }
  auto config = ModelConfig::FromDir(dir);
  if (!config.ok()) return config.status();
  absl::Status s = config->Validate();
  if (!s.ok()) return s;
  const std::string path = dir + "/model.safetensors";
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();

  auto w = std::make_unique<ModelWeights>();
  w->config = *config;
  w->file = std::shared_ptr<SafetensorsFile>(std::move(*file));
  const SafetensorsFile& f = *w->file;
  const ModelConfig& c = w->config;
  const int64_t h = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const DType md = options.matrix_dtype.value_or(DType::kF32);
  auto with_path = [&](absl::Status st) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  };

  s = Load(f, "model.embed_tokens.weight", {c.vocab_size, h}, md, false,
           &w->embed_tokens);
  if (!s.ok()) return with_path(s);
  w->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w->layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const int64_t dqk = c.qk_head_dim[l];
    const int64_t dvo = c.vo_head_dim[l];
    const int64_t dp = c.qk_proj_dim(l);  // q/k heads as projected
    struct Item {
      const char* suffix;
      std::vector<int64_t> shape;
      bool norm;
      Tensor* out;
    };
    const Item items[] = {
        {"input_layernorm.weight", {h}, true, &lw.attn_norm},
        {"self_attn.q_proj.weight", {c.num_heads * dp, h}, false, &lw.q_proj},
        {"self_attn.k_proj.weight",
         {c.num_kv_heads * dp, h},
         false,
         &lw.k_proj},
        {"self_attn.v_proj.weight",
         {c.num_kv_heads * dvo, h},
         false,
         &lw.v_proj},
        {"self_attn.o_proj.weight", {h, c.num_heads * dvo}, false, &lw.o_proj},
        {"post_attention_layernorm.weight", {h}, true, &lw.ffn_norm},
        {"mlp.gate_proj.weight", {inter, h}, false, &lw.gate_proj},
        {"mlp.up_proj.weight", {inter, h}, false, &lw.up_proj},
        {"mlp.down_proj.weight", {h, inter}, false, &lw.down_proj},
    };
    for (const Item& it : items) {
      s = Load(f, p + it.suffix, it.shape, it.norm ? DType::kF32 : md,
               /*force_copy=*/it.norm, it.out);
      if (!s.ok()) return with_path(s);
    }
    const Item extra[] = {
        {"self_attn.q_norm.weight", {dp}, c.qk_norm, &lw.q_norm},
        {"self_attn.k_norm.weight", {dp}, c.qk_norm, &lw.k_norm},
        {"self_attn.q_latent.weight",
         {c.num_heads * dqk, dp},
         c.qk_latent_maps(),
         &lw.q_latent},
        {"self_attn.k_latent.weight",
         {c.num_kv_heads * dqk, dp},
         c.qk_latent_maps(),
         &lw.k_latent},
        {"post_self_attn_layernorm.weight",
         {h},
         c.post_norms,
         &lw.post_attn_norm},
        {"post_feedforward_layernorm.weight",
         {h},
         c.post_norms,
         &lw.post_ffn_norm},
        {"self_attn.q_proj.bias", {c.num_heads * dp}, c.qkv_bias, &lw.q_bias},
        {"self_attn.k_proj.bias",
         {c.num_kv_heads * dp},
         c.qkv_bias,
         &lw.k_bias},
        {"self_attn.v_proj.bias",
         {c.num_kv_heads * dvo},
         c.qkv_bias,
         &lw.v_bias},
    };
    for (const Item& it : extra) {
      if (!it.norm) continue;  // the feature is off
      s = Load(f, p + it.suffix, it.shape, DType::kF32, true, it.out);
      if (!s.ok()) return with_path(s);
    }
    // RoPE table ([rope_dims / 2]): our calibrated tensor, else HF's legacy
    // persisted buffer, else the config's scheme.
    const int64_t rope = c.rope_dim(l);
    const TensorEntry* inv = nullptr;
    for (const char* suffix :
         {"self_attn.rotary_inv_freq", "self_attn.rotary_emb.inv_freq"}) {
      inv = f.Find(p + suffix);
      if (inv != nullptr) {
        if (inv->shape != std::vector<int64_t>{rope / 2}) {
          return with_path(absl::InvalidArgumentError(
              absl::StrCat(p, suffix, ": expected shape [", rope / 2, "], got ",
                           ShapeString(inv->shape))));
        }
        break;
      }
    }
    if (inv != nullptr) {
      lw.rope_inv_freq.resize(rope / 2);
      ConvertToF32(inv->data, inv->dtype, rope / 2, lw.rope_inv_freq.data());
      for (float x : lw.rope_inv_freq) {
        if (!std::isfinite(x)) {
          return with_path(absl::InvalidArgumentError(
              absl::StrCat(inv->name, ": non-finite inverse frequency")));
        }
      }
    } else {
      lw.rope_inv_freq = DefaultRopeInvFreq(c, l);
    }
  }
  s = Load(f, "model.norm.weight", {h}, DType::kF32, true, &w->final_norm);
  if (!s.ok()) return with_path(s);
  if (c.tie_word_embeddings) {
    // A view of the embedding (no data copy).
    w->lm_head.dtype = w->embed_tokens.dtype;
    w->lm_head.shape = w->embed_tokens.shape;
    w->lm_head.data = w->embed_tokens.data;
  } else {
    s = Load(f, "lm_head.weight", {c.vocab_size, h}, md, false, &w->lm_head);
    if (!s.ok()) return with_path(s);
  }
  return w;
}

}  // namespace latentkv::model
