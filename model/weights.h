// Loading a model directory (config.json + model.safetensors) into the
// weights the engine runs on.
//
// Tensor names are HF Llama's:
//   model.embed_tokens.weight                     [vocab, hidden]
//   model.layers.N.input_layernorm.weight         [hidden]
//   model.layers.N.self_attn.q_proj.weight        [num_heads * d_qk(N), hidden]
//   model.layers.N.self_attn.k_proj.weight        [num_kv_heads * d_qk(N),
//   hidden] model.layers.N.self_attn.v_proj.weight        [num_kv_heads *
//   d_vo(N), hidden] model.layers.N.self_attn.o_proj.weight        [hidden,
//   num_heads * d_vo(N)] model.layers.N.self_attn.rotary_inv_freq      [d_qk(N)
//   / 2]   (optional) model.layers.N.post_attention_layernorm.weight [hidden]
//   model.layers.N.mlp.gate_proj.weight           [intermediate, hidden]
//   model.layers.N.mlp.up_proj.weight             [intermediate, hidden]
//   model.layers.N.mlp.down_proj.weight           [hidden, intermediate]
//   model.norm.weight                             [hidden]
//   lm_head.weight                                [vocab, hidden] (absent when
//   tied)
// Q/K rows use HF's rotate-half RoPE layout. The optional rotary_inv_freq
// tensor overrides the layer's table (used by calibrated KV-Latent
// conversions); otherwise the table follows config.rope_scheme.
#ifndef LATENTKV_MODEL_WEIGHTS_H_
#define LATENTKV_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace latentkv::model {

// A weight tensor in memory: either a view into the memory-mapped file (when
// the stored dtype is the requested one) or an owned converted copy.
struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // valid while the owning ModelWeights lives
  std::vector<uint8_t> owned;  // backing store when converted
  int64_t numel() const;
  const float* f32() const { return static_cast<const float*>(data); }
};

struct LayerWeights {
  Tensor attn_norm;  // f32 [hidden]
  Tensor q_proj, k_proj, v_proj, o_proj;
  Tensor ffn_norm;  // f32 [hidden]
  Tensor gate_proj, up_proj, down_proj;
  std::vector<float> rope_inv_freq;  // [d_qk / 2]
};

struct LoadOptions {
  // dtype of the matrices (projections, embeddings, lm head) in memory; norms
  // are always f32. Default f32.
  DType matrix_dtype = DType::kF32;
};

struct ModelWeights {
  ModelConfig config;
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // f32 [hidden]
  Tensor lm_head;     // [vocab, hidden]; aliases embed_tokens when tied
  std::shared_ptr<SafetensorsFile> file;  // keeps views valid
};

// Loads and validates `<dir>/config.json` and `<dir>/model.safetensors`:
// missing tensors, wrong shapes or unsupported dtypes give InvalidArgument /
// NotFound naming the tensor.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(
    const std::string& dir, const LoadOptions& options = {});

// The layer's RoPE inverse-frequency table implied by the config (standard or
// frequency-aware) for head width d_qk.
std::vector<float> DefaultRopeInvFreq(const ModelConfig& config, int layer);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_WEIGHTS_H_
