// GGUF files (model/gguf): the container (header, every metadata value
// through each typed getter, the tensor directory), then what the loaders
// read from it: the model config, the tokenizer (byte-level BPE or, for
// tokenizer.ggml.model "llama", SentencePiece: encode and decode a sample)
// and, for small files, the weights.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "model/gguf/gguf_file.h"
#include "model/gguf_loader.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latentkv::fuzz::MemFile file;
  file.Write(data, size);
  auto opened = lm::GgufFile::Open(file.path());
  if (!opened.ok()) return 0;
  std::shared_ptr<const lm::GgufFile> gguf = std::move(*opened);
  for (const std::string& key : gguf->keys()) {
    (void)gguf->GetString(key);
    (void)gguf->GetInt(key);
    (void)gguf->GetFloat(key);
    (void)gguf->GetBool(key);
    (void)gguf->GetStringArray(key);
    (void)gguf->GetIntArray(key);
    (void)gguf->GetFloatArray(key);
  }
  for (const lm::GgufTensorInfo& t : gguf->tensors()) {
    (void)gguf->FindTensor(t.name);
  }
  auto tokenizer = lm::LoadGgufTokenizer(*gguf);
  if (tokenizer.ok()) {
    const auto ids = (*tokenizer)
                         ->Encode(
                             "Once upon a time, 42 <|im_end|>\n\n  "
                             "</div><start_of_turn>\xF0\x9F\x99\x82\xFF",
                             (*tokenizer)->add_bos());
    (void)(*tokenizer)->Decode(ids);
  }
  auto config = lm::ConfigFromGguf(*gguf);
  // The weights are views or conversions of tensor data inside the file, so
  // their memory is bounded by the input's size.
  if (config.ok()) (void)lm::LoadGgufModel(gguf);
  return 0;
}
