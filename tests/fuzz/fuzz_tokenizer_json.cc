// HF tokenizer.json (model/tokenizer, byte-level BPE): the JSON, vocab,
// merges, added tokens and pre-tokenizer recognition; a loaded tokenizer
// encodes and decodes a sample with special tokens, digits and non-ASCII.
#include <cstddef>
#include <cstdint>

#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A directory of its own: the loader also reads tokenizer_config.json
  // beside the file (absent here).
  static latentkv::fuzz::ScratchDir dir;
  const std::string path =
      dir.Write("tokenizer.json",
                std::string_view(reinterpret_cast<const char*>(data), size));
  auto tok = lm::LoadHfTokenizerJson(path);
  if (!tok.ok()) return 0;
  const auto ids = (*tok)->Encode(
      "Hello world! 12345 <|im_start|>user\n\xc3\xa9t\xc3\xa9 \xe2\x96\x81x",
      (*tok)->add_bos());
  (void)(*tok)->Decode(ids);
  return 0;
}
