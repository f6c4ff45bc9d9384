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
//   num_heads * d_vo(N)] model.layers.N.self_attn.rotary_inv_freq
//   [rope_dims(N) / 2] (optional)
//   model.layers.N.post_attention_layernorm.weight [hidden]
//   model.layers.N.mlp.gate_proj.weight           [intermediate, hidden]
//   model.layers.N.mlp.up_proj.weight             [intermediate, hidden]
//   model.layers.N.mlp.down_proj.weight           [hidden, intermediate]
//   model.norm.weight                             [hidden]
//   lm_head.weight                                [vocab, hidden] (absent when
//   tied)
// With the config's architecture features (model/config.h):
//   model.layers.N.self_attn.{q,k,v}_proj.bias     [rows]     (qkv_bias)
//   model.layers.N.self_attn.q_norm.weight         [d_qk(N)]  (qk_norm)
//   model.layers.N.self_attn.k_norm.weight         [d_qk(N)]  (qk_norm)
//   With qk_norm_dim P > 0, q/k heads are projected and normed at width P:
//   q_proj [num_heads * P, hidden], k_proj [num_kv_heads * P, hidden], the
//   q/k norms and biases [P per head], plus the per-head maps to d_qk
//   (row block h is head h's [d_qk(N), P] matrix), always f32:
//   model.layers.N.self_attn.q_latent.weight       [num_heads * d_qk(N), P]
//   model.layers.N.self_attn.k_latent.weight       [num_kv_heads * d_qk(N), P]
//   model.layers.N.post_self_attn_layernorm.weight [hidden]   (post_norms)
//   model.layers.N.post_feedforward_layernorm.weight [hidden] (post_norms)
// Norm weights multiply as they are (HF Gemma's 1 + w is folded in).
// Q/K rows use HF's rotate-half RoPE layout. The optional rotary_inv_freq
// tensor overrides the layer's table (used by calibrated KV-Latent
// conversions); otherwise the table follows config.rope_scheme.
#ifndef LATENTKV_MODEL_WEIGHTS_H_
#define LATENTKV_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "model/config.h"
#include "model/gguf/gguf_file.h"
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
  // With config.qk_norm: f32 [qk_proj_dim] each; else empty.
  Tensor q_norm, k_norm;
  // With config.qk_norm_dim > 0: f32 [heads * d_qk, qk_norm_dim] each (the
  // per-head maps applied after the norms); else empty.
  Tensor q_latent, k_latent;
  // With config.post_norms: f32 [hidden] each; else empty.
  Tensor post_attn_norm, post_ffn_norm;
  // With config.qkv_bias: f32 [q_proj rows], [k_proj rows], [v_proj rows].
  Tensor q_bias, k_bias, v_bias;
  std::vector<float> rope_inv_freq;  // [config.rope_dim(layer) / 2]
};

struct LoadOptions {
  // dtype of the matrices (projections, embeddings, lm head) in memory; norms
  // are always f32. Unset (the default): f32 for safetensors models, the
  // stored dtype for GGUF models (f16 becomes f32; q5_0, q5_1 and the
  // k-quants stay as stored too). A block-quantized dtype quantizes at load
  // (common/dtype.h, ConvertFromF32) and needs every matrix width to be a
  // multiple of its block: 32 for q8_0, q4_0, q4_1, q5_0, q5_1; 256 for the
  // k-quants q2_K .. q6_K.
  std::optional<DType> matrix_dtype;
};

// Parses a --weights_dtype value: "auto" (unset), f32, bf16, q8_0, q4_0,
// q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K (k-quants also in lower
// case). InvalidArgument otherwise (f16 too: there are no fast f16 kernels;
// fp8_e4m3 is a KV dtype).
absl::StatusOr<std::optional<DType>> ParseWeightsDType(std::string_view name);

struct ModelWeights {
  ModelConfig config;
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // f32 [hidden]
  Tensor lm_head;     // [vocab, hidden]; aliases embed_tokens when tied
  std::shared_ptr<SafetensorsFile> file;  // keeps views valid
  std::shared_ptr<const GgufFile> gguf;   // keeps views valid (GGUF models)
};

// Loads and validates a model: `<dir>/config.json` and
// `<dir>/model.safetensors`, or a GGUF model (a `.gguf` file, or a directory
// without config.json holding one; model/gguf_loader.h). Missing tensors,
// wrong shapes or unsupported dtypes give InvalidArgument / NotFound naming
// the tensor.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(
    const std::string& dir, const LoadOptions& options = {});

// Converts a [rows, cols] matrix stored in `from` into `to`, row by row
// through f32 (quantized targets need cols to be a multiple of 32:
// InvalidArgument otherwise). `out` receives DTypeRowBytes(to, cols) * rows
// bytes.
absl::Status ConvertMatrix(const void* src, DType from, int64_t rows,
                           int64_t cols, DType to, std::vector<uint8_t>* out);

// The layer's RoPE inverse-frequency table implied by the config (standard or
// frequency-aware) for head width d_qk; base rope_local_theta for a
// sliding-window layer when set, else rope_theta.
std::vector<float> DefaultRopeInvFreq(const ModelConfig& config, int layer);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_WEIGHTS_H_
