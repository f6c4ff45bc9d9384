// Structured-output specs as clients send them (worker/grammar): a JSON
// schema, "any object", a regex or a Lark grammar, compiled by llguidance
// over SmolLM2-135M's real vocabulary (49,152 byte-level BPE tokens), then
// up to 8 steps of what the engine does with it: the mask, the lowest
// allowed token checked with Allows and accepted, Done. A hostile spec must
// give an error or a working constraint in bounded time (libFuzzer's
// -timeout and -rss_limit_mb): never a crash, a hang or a leak. The first
// byte picks the kind; the rest is the spec's text.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/grammar/llguidance_compiler.h"

namespace lw = latentkv::worker;

namespace {

const lw::LlguidanceCompiler* Compiler() {
  static std::unique_ptr<lw::LlguidanceCompiler> c = [] {
    std::unique_ptr<lw::LlguidanceCompiler> made;
    auto lib = lw::LlguidanceLibrary::LoadDefault();
    auto tok = latentkv::model::LoadTokenizer(
        std::string(LATENTKV_SHARED_DIR) +
            "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        0);
    if (!lib.ok() || !tok.ok()) {
      std::fprintf(stderr, "fuzz_structured_output: %s / %s\n",
                   lib.status().ToString().c_str(),
                   tok.status().ToString().c_str());
      std::abort();  // a harness that cannot run must not pass
    }
    auto c = lw::LlguidanceCompiler::Create(*lib, **tok, (*tok)->vocab_size(),
                                            {(*tok)->eos_id()});
    if (!c.ok()) std::abort();
    return std::move(*c);
  }();
  return c.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  latentkv::fuzz::Input in(data, size);
  static constexpr lw::ConstraintKind kKinds[] = {
      lw::ConstraintKind::kJsonSchema, lw::ConstraintKind::kJsonObject,
      lw::ConstraintKind::kRegex, lw::ConstraintKind::kLark};
  const lw::ConstraintKind kind = kKinds[in.Byte() % 4];
  const std::string text(in.Rest());
  auto c = Compiler()->Compile({kind, text});
  if (!c.ok()) return 0;
  lw::TokenConstraint& k = **c;
  std::vector<uint32_t> mask(k.mask_words());
  for (int step = 0; step < 8 && !k.Done(); ++step) {
    if (!k.FillMask(absl::MakeSpan(mask)).ok()) return 0;
    int32_t pick = -1;
    for (size_t w = 0; w < mask.size() && pick < 0; ++w) {
      if (mask[w] != 0) {
        pick = static_cast<int32_t>(w * 32 + __builtin_ctz(mask[w]));
      }
    }
    if (pick < 0) return 0;
    // The mask and the one-token check agree (the lazy mode relies on it).
    if (!k.Allows(pick)) std::abort();
    if (!k.Accept(pick).ok()) return 0;
  }
  return 0;
}
