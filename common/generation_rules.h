// The admission rules of a generation request, shared by every entry point
// (the coordinator's public API, a worker's Generate/Prefill RPCs, the
// in-process engine), so a worker called directly refuses exactly what the
// coordinator refuses. Plain logic: no model, no engine.
#ifndef LATENTKV_COMMON_GENERATION_RULES_H_
#define LATENTKV_COMMON_GENERATION_RULES_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace latentkv {

// What the model allows.
struct GenerationLimits {
  int32_t vocab_size = 0;  // token ids lie in [0, vocab_size)
  int64_t context = 0;     // positions lie in [0, context)
};

// A request after defaults are resolved.
struct GenerationParams {
  absl::Span<const int32_t> prompt;  // token ids
  int64_t max_new_tokens = 0;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int64_t top_k = 0;  // 0: off
};

// OK, or InvalidArgument naming the first rule broken: a non-empty prompt of
// ids inside the vocabulary that leaves room in the context;
// max_new_tokens > 0 and prompt + max_new_tokens <= context; temperature
// finite and >= 0; top_p in (0, 1]; top_k >= 0.
absl::Status ValidateGeneration(const GenerationParams& params,
                                const GenerationLimits& limits);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_GENERATION_RULES_H_
