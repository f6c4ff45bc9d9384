// Writing model directories: from a llama2.c checkpoint, and synthetic models
// with real shapes and random weights (for speed and memory measurements).
#ifndef LATENTKV_MODEL_CONVERT_H_
#define LATENTKV_MODEL_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "model/config.h"

namespace latentkv::model {

// Converts a llama2.c checkpoint (legacy v0 format: 7 int32 header, f32
// tensors; a negative vocab_size means an untied classifier follows) and its
// tokenizer into `out_dir`: config.json, model.safetensors (in `dtype`) and
// tokenizer.bin (the llama2.c tokenizer, copied). llama2.c's RoPE pairs are
// interleaved (2i, 2i+1); HF's are rotate-half (i, i + hs/2), so the rows of
// wq and wk are permuted per head: new row (half * hs/2 + i) = old row
// (2i + half). Errors: NotFound / InvalidArgument (truncated or inconsistent
// file).
absl::Status ConvertLlama2c(const std::string& checkpoint_path,
                            const std::string& tokenizer_path,
                            const std::string& out_dir,
                            DType dtype = DType::kF32);

// Writes a model directory with `config`, random weights (normal with std
// 0.02, norms 1, fixed `seed`) in `dtype`, and a byte-level llama2.c
// tokenizer of config.vocab_size tokens.
absl::Status WriteSyntheticModel(const ModelConfig& config,
                                 const std::string& out_dir, DType dtype,
                                 uint64_t seed);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_CONVERT_H_
