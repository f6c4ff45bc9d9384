// Writing a converted model directory: the source model's embeddings, norms,
// MLP and LM head unchanged, new attention tensors and a new config.
#ifndef LATENTKV_MODEL_TRANSFORM_MODEL_WRITER_H_
#define LATENTKV_MODEL_TRANSFORM_MODEL_WRITER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "model/config.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// One layer's new attention weights (f32, row-major, HF layout), with
// H = num_heads, K = num_kv_heads and d_qk / d_vo of the NEW config; P =
// its qk_proj_dim (qk_norm_dim when q/k heads are mapped after their norms,
// else d_qk).
struct AttentionTensors {
  std::vector<float> q;  // [H * P, hidden]
  std::vector<float> k;  // [K * P, hidden]
  std::vector<float> v;  // [K * d_vo, hidden]
  std::vector<float> o;  // [hidden, H * d_vo]
  // [rope_dims / 2] (config.rope_dim(N)), written as
  // model.layers.N.self_attn.rotary_inv_freq; empty:
  // none (the loader uses the config's RoPE scheme).
  std::vector<float> rope_inv_freq;
  // With config.qk_norm_dim > 0: the per-head maps after the norms,
  // [H * d_qk, P] and [K * d_qk, P] (model/weights.h); else empty. (Last:
  // callers build the fields above positionally.)
  std::vector<float> q_latent;
  std::vector<float> k_latent;
};

// The elements of an f32 tensor in memory, copied (a source matrix kept as
// it is in a new AttentionTensors).
std::vector<float> F32Copy(const Tensor& t);

// Writes `out_dir`/config.json (`config`), model.safetensors (every tensor in
// `dtype` except rotary_inv_freq, always f32) and copies the tokenizer files
// (tokenizer.model, tokenizer.bin, tokenizer.json, tokenizer_config.json)
// that `src_dir` has, unless `copy_tokenizer` is false (a GGUF source writes
// its own from its metadata). `src` must be the
// f32-loaded model of `src_dir`; `attn` has config.num_layers entries.
// Errors: InvalidArgument (config invalid, shapes not matching it, out_dir
// is src_dir, non-f32 source), Internal (I/O).
absl::Status WriteConvertedModel(const ModelWeights& src,
                                 const std::string& src_dir,
                                 const ModelConfig& config,
                                 const std::vector<AttentionTensors>& attn,
                                 const std::string& out_dir, DType dtype,
                                 const std::string& source_tag,
                                 bool copy_tokenizer = true);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_MODEL_WRITER_H_
