// Internal to model/gguf_loader.cc: the architecture-specific parts of a
// GGUF config (ModelConfig's features, model/config.h) as llama.cpp's
// converter writes them.
#ifndef LATENTKV_MODEL_GGUF_ARCH_H_
#define LATENTKV_MODEL_GGUF_ARCH_H_

#include <string>

#include "absl/status/status.h"
#include "model/config.h"
#include "model/gguf/gguf_file.h"

namespace latentkv::model::internal {

// Architectures ConfigFromGguf reads: llama, gemma3, qwen2, qwen3.
bool SupportedGgufArchitecture(const std::string& arch);

// Sets the features `arch` implies (num_layers, heads and head dims already
// in `c`):
//  - gemma3: GeGLU (tanh), q/k norms, post norms, embeddings * sqrt(hidden),
//    attention scale 1/sqrt(key_length) (1/sqrt(hidden / heads) for the
//    62-layer 27B, as llama.cpp), sliding windows of attention.sliding_window
//    on every layer but each sixth (HF's pattern 6), local RoPE base 10000;
//  - qwen2: q/k/v biases when blk.0.attn_q.bias exists;
//  - qwen3: q/k norms.
absl::Status SetArchFeatures(const GgufFile& f, const std::string& arch,
                             ModelConfig* c);

// RoPE scaling: {arch}.rope.scaling.type none | linear | yarn (with
// rope.scaling.factor, original_context_length, yarn_beta_fast/slow,
// attn_factor), and the rope_freqs.weight tensor (f32 [head_dim / 2]:
// Llama 3.1's per-pair factors). Unimplemented for other types (longrope).
absl::Status ReadRopeScaling(const GgufFile& f, const std::string& prefix,
                             int head_dim, ModelConfig* c);

}  // namespace latentkv::model::internal

#endif  // LATENTKV_MODEL_GGUF_ARCH_H_
