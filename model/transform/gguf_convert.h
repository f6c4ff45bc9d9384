// `latentkv convert --from gguf`: a GGUF model (model/gguf_loader.h) written
// as a model directory every other tool reads: config.json, model.safetensors
// (HF tensor names, rotate-half Q/K rows, dequantized to `dtype`), and the
// tokenizer: tokenizer.json for a byte-level BPE vocabulary, tokenizer.model
// for a SentencePiece one (tokenizer.ggml.model "llama": Gemma, Llama 2),
// each with tokenizer_config.json (special tokens, BOS/EOS, add_bos and the
// chat template: the file's own, else the family's built-in one that
// serving the file would use). The KV conversions (kv_latent.h, gqa.h) then
// run on that directory.
#ifndef LATENTKV_MODEL_TRANSFORM_GGUF_CONVERT_H_
#define LATENTKV_MODEL_TRANSFORM_GGUF_CONVERT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "model/gguf/gguf_file.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// `gguf_path`: a .gguf file or a directory holding one. `dtype`: f32, bf16
// or f16 (safetensors has no block-quantized types; serve the .gguf itself
// to keep the weights quantized). Errors: those of the GGUF loader and
// tokenizer reader, InvalidArgument for a quantized dtype, Internal (I/O).
absl::Status ConvertGguf(const std::string& gguf_path,
                         const std::string& out_dir, DType dtype);

// The tokenizer files of `file`'s vocabulary in `out_dir` (created when
// missing): tokenizer.json or tokenizer.model, and tokenizer_config.json
// with the chat template (above). Everything is read, and refused, before
// anything is written. Errors: those of the vocabulary readers, Internal.
absl::Status WriteGgufTokenizer(const GgufFile& file,
                                const std::string& out_dir);

// A conversion's source: a model directory or a GGUF model (a .gguf file or
// a directory holding one), every matrix in f32 (GGUF weights dequantized).
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadSourceModel(
    const std::string& model_path);

// For a source loaded from GGUF, WriteGgufTokenizer into `out_dir`; nothing
// for a model directory (WriteConvertedModel copies its tokenizer files).
absl::Status WriteModelTokenizer(const ModelWeights& src,
                                 const std::string& out_dir);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_GGUF_CONVERT_H_
