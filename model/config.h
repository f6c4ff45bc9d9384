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
  // Values (K and V) cached per token in `layer`: n_kv*(d_qk+d_vo).
  int64_t KvValuesPerTokenLayer(int layer) const;
  // Sum over layers.
  int64_t KvValuesPerToken() const;
  // Parameter count implied by the config.
  int64_t ParameterCount() const;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_CONFIG_H_
