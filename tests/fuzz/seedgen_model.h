// Seeds of the model-file targets derived from the real files in ../shared
// (seedgen.cc): SmolLM2's GGUF at toy size (all its metadata keys, block 0's
// tensors), its tokenizer.json and chat template cut to 512 tokens, and
// stories260K converted (config.json, model.safetensors) plus a toy llama2.c
// checkpoint. Files that are absent are skipped.
#ifndef LATENTKV_TESTS_FUZZ_SEEDGEN_MODEL_H_
#define LATENTKV_TESTS_FUZZ_SEEDGEN_MODEL_H_

#include <filesystem>

#include "absl/status/status.h"

namespace latentkv::fuzz {

// Writes under `dir`/<target>/; `shared` holds models/.
absl::Status WriteModelSeeds(const std::filesystem::path& dir,
                             const std::filesystem::path& shared);

}  // namespace latentkv::fuzz

#endif  // LATENTKV_TESTS_FUZZ_SEEDGEN_MODEL_H_
