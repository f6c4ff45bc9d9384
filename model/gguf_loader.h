// Models stored as GGUF (llama.cpp's container): the config from the
// metadata and the weights from the tensors, mapped to the HF Llama layout
// the engine runs (model/weights.h).
//
// Supported: architectures "llama" (Llama 1-3, Mistral-style, SmolLM, ...;
// MHA and GQA, tied or untied LM head), "gemma3" (Gemma 3 text models),
// "qwen2" (Qwen2 / Qwen2.5: q/k/v biases) and "qwen3" (q/k norms), with the
// config's architecture features (model/config.h; model/gguf_arch.h), RoPE
// scaling none / linear / yarn and llama.cpp's rope_freqs factors (Llama
// 3.1), and tensors in f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 and the
// k-quants q2_K..q6_K (kept as stored, f16 as f32; k-quant rows must be whole
// 256-element super-blocks). llama.cpp's converter permutes the
// rows of Llama's Q and K within each head for interleaved RoPE pairs: GGUF
// row (h*hd + 2i + half) holds HF row (h*hd + half*hd/2 + i); the loader
// undoes it (on the stored bytes, so quantized rows stay quantized). The
// other architectures' rows are stored unpermuted (rotate-half RoPE). Not
// supported (Unimplemented, named): other architectures, partial rotary
// (rope.dimension_count != key_length), other RoPE scaling types.
#ifndef LATENTKV_MODEL_GGUF_LOADER_H_
#define LATENTKV_MODEL_GGUF_LOADER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/gguf/gguf_file.h"
#include "model/weights.h"

namespace latentkv::model {

// The GGUF file a model path names: `path` itself when it is a regular file
// ending in ".gguf"; for a directory without config.json, its single *.gguf
// file. NotFound when the path names no GGUF model (a directory with
// config.json, or none / several *.gguf files: the message says which).
absl::StatusOr<std::string> FindGgufFile(const std::string& path);
// True when FindGgufFile succeeds.
bool IsGgufModel(const std::string& path);

// How LoadModel reads `path`: nullopt for a directory with config.json
// (safetensors), else the GGUF file FindGgufFile names; its NotFound (no
// model, several .gguf files, ...) when it is neither.
absl::StatusOr<std::optional<std::string>> ResolveModelPath(
    const std::string& path);

// The config of the model at `path`, a directory with config.json or a GGUF
// model (ResolveModelPath), without loading weights.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// The config implied by the metadata ({arch}.block_count, embedding_length,
// feed_forward_length, attention.head_count(_kv), context_length,
// attention.layer_norm_rms_epsilon, rope.freq_base, vocab size from
// {arch}.vocab_size or the token list, BOS/EOS from tokenizer.ggml.*, tied
// when there is no output.weight). Further end-of-generation ids as
// llama.cpp finds them: tokenizer.ggml.eot/eom_token_id and control tokens
// whose text is <|endoftext|>, <|im_end|>, <|eot_id|>, <|eom_id|>, <|end|>,
// <end_of_turn>, <|end_of_text|> or </s>.
absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& file);

// Loads the weights. options.matrix_dtype unset keeps every matrix in its
// stored dtype (f16 becomes f32: no fast f16 kernels); set, each matrix is
// converted (dequantized and, for a quantized target, requantized; the
// matrix width must then be a multiple of 32). Norms are always f32. Errors
// name the tensor: missing, wrong dims, unsupported dtype.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadGgufModel(
    std::shared_ptr<const GgufFile> file, const LoadOptions& options = {});

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_GGUF_LOADER_H_
