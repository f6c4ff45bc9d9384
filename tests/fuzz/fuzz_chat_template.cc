// Chat templates (coordinator/http/chat_template.h over mini_jinja.h): the
// first byte picks the document. Even: the rest is a Jinja template, parsed
// and rendered over a fixed conversation. Odd: the rest is a model's
// tokenizer_config.json (chat_template, bos_token, eos_token as strings or
// {content}), loaded as the coordinator loads it and rendered likewise.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/http/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

namespace http = latentkv::coordinator::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latentkv::fuzz::ScratchDir dir;
  latentkv::fuzz::Input in(data, size);
  const uint8_t mode = in.Byte();
  const bool adds_bos = (mode & 2) != 0;
  absl::StatusOr<http::ChatTemplate> t;
  if ((mode & 1) == 0) {
    t = http::ChatTemplate::FromJinja(std::string(in.Rest()), "<s>", "</s>",
                                      adds_bos);
  } else {
    dir.Write("tokenizer_config.json", in.Rest());
    t = http::ChatTemplate::FromModelDir(dir.path(), adds_bos);
  }
  if (!t.ok()) return 0;
  const std::vector<http::ChatMessage> messages = {
      {"system", "Be brief."},
      {"user", "What is 2 + 2? {{ not a tag }}"},
      {"assistant", "4"},
      {"user", "And \xc3\xa9 in 'quotes'?"}};
  (void)t->Render(messages);
  (void)t->Render({});
  return 0;
}
