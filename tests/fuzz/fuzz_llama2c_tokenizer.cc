// llama2.c tokenizer.bin (model/tokenizer): max_token_length, then (score,
// length, bytes) per token; a loaded tokenizer encodes and decodes a sample
// and every token's bytes.
#include <cstddef>
#include <cstdint>

#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latentkv::fuzz::MemFile file;
  file.Write(data, size);
  auto tok = lm::LoadLlama2cTokenizer(file.path(), 0);
  if (!tok.ok()) return 0;
  const auto ids =
      (*tok)->Encode("Once upon a time \xf0\x9f\x98\x80 there was", true);
  (void)(*tok)->Decode(ids);
  const int32_t n = (*tok)->vocab_size();
  for (int32_t t = 0; t < n && t < 4096; ++t) (void)(*tok)->TokenBytes(1, t);
  return 0;
}
