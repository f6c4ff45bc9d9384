// The model configuration: HF Llama `config.json` keys plus KV-Latent's
// per-layer latent head dims and the RoPE scheme.
//
// Invariants after Validate(): every count is positive; num_heads is a
// multiple of num_kv_heads; qk_head_dim/vo_head_dim have num_layers entries;
// every qk dim is even (a multiple of 4 with the frequency-aware scheme).
#ifndef LATENTKV_MODEL_CONFIG_H_
#define LATENTKV_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::model {

enum class RopeScheme { kStandard, kFrequencyAware };
// The gated MLP's activation: SwiGLU (Llama) or GeGLU with the tanh GELU
// approximation (Gemma's gelu_pytorch_tanh).
enum class Activation { kSilu, kGeluTanh };

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;    // "num_hidden_layers"
  int num_heads = 0;     // "num_attention_heads"
  int num_kv_heads = 0;  // "num_key_value_heads" (defaults to num_heads)
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  // Per-layer query/key and value/output head dims. In config.json each is a
  // number (all layers) or a list; absent means hidden_size / num_heads.
  std::vector<int> qk_head_dim;
  std::vector<int> vo_head_dim;
  // Partial rotary ("rope_dims", number or list; or HF's
  // "partial_rotary_factor"): layer l rotates channels [0, rope_dims[l]) of
  // every q/k head (rotate-half within them) and leaves [rope_dims[l],
  // d_qk) position-free (NoPE, as KV-Latent's compressed key dims). Empty
  // (the default): every layer rotates all d_qk channels. Each entry even,
  // 0 <= entry <= qk_head_dim[l]; standard rope_scheme only.
  std::vector<int> rope_dims;
  RopeScheme rope_scheme =
      RopeScheme::kStandard;  // "standard"|"frequency_aware"
  int bos_token_id = 1;
  int eos_token_id = 2;
  // Further end-of-generation token ids (generation stops at any of them as
  // at eos_token_id): config.json's eos_token_id list after its first entry;
  // for GGUF, tokenizer.ggml.eot/eom_token_id and control tokens named like
  // llama.cpp's end-of-generation set (<|endoftext|>, <|im_end|>,
  // <|eot_id|>, ...). Empty by default.
  std::vector<int> extra_eos_token_ids;

  // Architecture features beyond Llama's; every default is Llama's. Gemma 3
  // sets them all (model/gguf_loader.cc). config.json keys in quotes.
  // "hidden_act": "silu" | "gelu_pytorch_tanh".
  Activation hidden_act = Activation::kSilu;
  // "qk_norm": an RMSNorm (weights [d_qk], eps rms_norm_eps) on every query
  // and key head after the projection, before RoPE.
  bool qk_norm = false;
  // "qk_norm_dim": with qk_norm, the width of every q/k head as projected and
  // normed (q_proj rows num_heads * qk_norm_dim, norm weights of this size);
  // each normed head is then mapped to the layer's d_qk by its own matrix
  // before RoPE (self_attn.q_latent / k_latent, model/weights.h): the
  // KV-Latent form of a model whose q/k norms act on the whole source head
  // (Gemma 3), where the cache holds only the d_qk-wide latent keys. 0 (the
  // default): heads are projected at d_qk and normed there. <= 4096.
  int qk_norm_dim = 0;
  // "post_norms": an RMSNorm on the attention output and on the MLP output
  // before each residual add ("sandwich" norms).
  bool post_norms = false;
  // "embedding_scale": token embeddings are multiplied by this (Gemma:
  // sqrt(hidden_size)). > 0.
  float embedding_scale = 1.0f;
  // "query_pre_attn_scalar": the attention scale is 1/sqrt(this); 0 means
  // 1/sqrt(d_qk) of the layer. >= 0.
  float query_pre_attn_scalar = 0.0f;
  // "layer_sliding_window": per layer, 0 for global attention or a window
  // W > 0: a query at position p sees keys at positions in (p - W, p]. Empty
  // means all 0; else num_layers entries.
  std::vector<int> sliding_window;
  // "rope_local_base_freq": the RoPE base of sliding-window layers; 0 means
  // rope_theta.
  double rope_local_theta = 0.0;
  // "attention_bias": bias vectors on the q, k and v projections (Qwen2).
  bool qkv_bias = false;
  // RoPE scaling (HF "rope_scaling"; GGUF rope.scaling.* and rope_freqs),
  // applied to every layer but sliding-window layers with their own base
  // (Gemma 3 scales its global layers only). Tables: model/weights.h
  // DefaultRopeInvFreq.
  struct RopeScaling {
    // kLinear: inv_freq / factor. kLlama3: Llama 3.1's smooth per-frequency
    // factors (low/high_freq_factor, original_max_position). kYarn: YaRN's
    // ramp between interpolation and extrapolation (beta_fast, beta_slow,
    // original_max_position) and attention logits times mscale^2, mscale =
    // attention_factor (0: 0.1 ln(factor) + 1).
    enum class Type { kNone, kLinear, kLlama3, kYarn } type = Type::kNone;
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    int original_max_position = 0;  // 0: max_position_embeddings
    double beta_fast = 32.0;
    double beta_slow = 1.0;
    double attention_factor = 0.0;
  } rope_scaling;
  // "rope_freq_factors": per rotary pair, inv_freq is divided by these
  // (llama.cpp's rope_freqs tensor: Llama 3.1 scaling as stored in GGUF).
  // Empty, or d_qk / 2 entries (every layer's d_qk equal).
  std::vector<float> rope_freq_factors;

  // A full-dimension Llama config: d_qk = d_vo = hidden / heads in every
  // layer, standard RoPE, eps 1e-5, untied, BOS 1 / EOS 2.
  static ModelConfig Llama(int hidden, int intermediate, int layers, int heads,
                           int kv_heads, int vocab, int context,
                           double rope_theta = 10000.0);
  // Parses config.json text; unknown keys are ignored. Errors name the key.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& json_text);
  // Reads and parses `<dir>/config.json`.
  static absl::StatusOr<ModelConfig> FromDir(const std::string& dir);
  // Serialises with all keys (latent dims as lists when they differ by layer).
  std::string ToJson() const;
  absl::Status Validate() const;
  // The counts' upper bounds (well above any published model; they keep a
  // hostile config.json or GGUF header from asking for absurd allocations
  // before anything is read): checked by Validate and by the parsers right
  // after the counts are read.
  absl::Status CheckBounds() const;

  int head_dim() const { return hidden_size / num_heads; }
  // Whether q/k heads are mapped after their norm (qk_norm_dim > 0).
  bool qk_latent_maps() const { return qk_norm_dim > 0; }
  // The width of `layer`'s q/k heads as projected (and normed): qk_norm_dim
  // when set, else d_qk.
  int qk_proj_dim(int layer) const {
    return qk_norm_dim > 0 ? qk_norm_dim : qk_head_dim[layer];
  }
  // The rotated channel count of `layer`'s q/k heads (see rope_dims).
  int rope_dim(int layer) const {
    return rope_dims.empty() ? qk_head_dim[layer] : rope_dims[layer];
  }
  // The sliding window of `layer` (0: global attention).
  int window(int layer) const {
    return sliding_window.empty() ? 0 : sliding_window[layer];
  }
  // The attention scale of `layer`: 1/sqrt(query_pre_attn_scalar) when set,
  // else 1/sqrt(d_qk); times YaRN's mscale^2 on scaled layers.
  float attention_scale(int layer) const;
  // Whether rope_scaling / rope_freq_factors apply to `layer`.
  bool rope_scaled(int layer) const {
    return !(window(layer) > 0 && rope_local_theta > 0);
  }
  // True when any architecture feature beyond Llama's is on.
  bool has_arch_features() const;
  // Values (K and V) cached per token in `layer`: n_kv*(d_qk+d_vo).
  int64_t KvValuesPerTokenLayer(int layer) const;
  // Sum over layers.
  int64_t KvValuesPerToken() const;
  // Parameter count implied by the config.
  int64_t ParameterCount() const;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_CONFIG_H_
