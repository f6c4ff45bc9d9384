// SentencePiece tokenizer.model (model/tokenizer/sentencepiece_model.h: our
// own reader of the ModelProto wire format), then the tokenizer over it:
// encode and decode a sample.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto model = lm::internal::SentencePieceModel::Parse(bytes, &error);
  if (model == nullptr) return 0;
  (void)model->Encode("Hello  world \xe2\x96\x81 caf\xc3\xa9 \x01");
  // The same bytes through the public loader (Tokenizer interface).
  static latentkv::fuzz::MemFile file;
  file.Write(data, size);
  auto tok = lm::LoadSentencePieceTokenizer(file.path());
  if (!tok.ok()) return 0;
  (void)(*tok)->Decode((*tok)->Encode("Hello world caf\xc3\xa9", true));
  return 0;
}
