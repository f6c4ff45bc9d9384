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

#include <string>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace latentkv::model::transform {

// `gguf_path`: a .gguf file or a directory holding one. `dtype`: f32, bf16
// or f16 (safetensors has no block-quantized types; serve the .gguf itself
// to keep the weights quantized). Errors: those of the GGUF loader and
// tokenizer reader, InvalidArgument for a quantized dtype, Internal (I/O).
absl::Status ConvertGguf(const std::string& gguf_path,
                         const std::string& out_dir, DType dtype);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_GGUF_CONVERT_H_
