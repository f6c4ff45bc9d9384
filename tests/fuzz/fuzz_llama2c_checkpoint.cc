// llama2.c checkpoints (model/convert.h ConvertLlama2c): the 7-int32 header,
// the size it implies and the RoPE row permutation; a converted directory is
// loaded back (config.json + model.safetensors).
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/convert.h"
#include "model/weights.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latentkv::fuzz::MemFile checkpoint;
  static latentkv::fuzz::ScratchDir dir;
  // The tokenizer is copied as it is (its parser has its own target).
  static const std::string tokenizer =
      dir.Write("tok.bin", std::string("\x08\0\0\0", 4));
  checkpoint.Write(data, size);
  const std::string out = dir.path() + "/model";
  if (!lm::ConvertLlama2c(checkpoint.path(), tokenizer, out).ok()) return 0;
  (void)lm::LoadModel(out);
  return 0;
}
