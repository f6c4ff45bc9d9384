// The admission rules of a generation request, shared by every entry point
// (the coordinator's public API, a worker's Generate/Prefill RPCs, the
// in-process engine), so a worker called directly refuses exactly what the
// coordinator refuses. Plain logic: no model, no engine.
#ifndef LATENTKV_COMMON_GENERATION_RULES_H_
#define LATENTKV_COMMON_GENERATION_RULES_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace latentkv {

// What the model allows.
struct GenerationLimits {
  int32_t vocab_size = 0;  // token ids lie in [0, vocab_size)
  int64_t context = 0;     // positions lie in [0, context)
};

// What changes the logits before sampling beyond temperature, top-k and
// top-p, with OpenAI's and vLLM's meanings. Applied in this order:
//  1. repetition_penalty (vLLM/HF): every token in the prompt or generated
//     so far has a positive logit divided by it, a negative one multiplied;
//  2. frequency and presence penalties (OpenAI): every token generated so
//     far loses frequency_penalty * its count + presence_penalty;
//  3. logit_bias: added to the listed tokens' logits;
// then temperature, top-k, top-p and min_p (tokens whose probability is
// under min_p times the most likely one's are dropped). stop_token_ids end
// the generation like EOS (the token is not returned).
struct LogitControls {
  float repetition_penalty = 1.0f;                    // (0, 10]; 1: off
  float frequency_penalty = 0.0f;                     // [-2, 2]
  float presence_penalty = 0.0f;                      // [-2, 2]
  float min_p = 0.0f;                                 // [0, 1]; 0: off
  std::vector<std::pair<int32_t, float>> logit_bias;  // values [-100, 100]
  std::vector<int32_t> stop_token_ids;

  // Whether anything above changes the logits (a greedy request then needs
  // them on the host instead of the device's argmax).
  bool ChangesLogits() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f ||
           presence_penalty != 0.0f || !logit_bias.empty();
  }
};

// Most entries in logit_bias, and in stop_token_ids.
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr size_t kMaxStopTokenIds = 64;

// Most alternatives a request may ask log-probabilities of (OpenAI's
// top_logprobs limit).
inline constexpr int32_t kMaxTopLogprobs = 20;

// A request after defaults are resolved.
struct GenerationParams {
  absl::Span<const int32_t> prompt;  // token ids
  int64_t max_new_tokens = 0;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int64_t top_k = 0;                        // 0: off
  const LogitControls* controls = nullptr;  // null: none
  // -1: none; 0..kMaxTopLogprobs: each token's log-probability and that
  // many alternatives.
  int32_t logprobs = -1;
  bool prompt_logprobs = false;  // needs logprobs >= 0
};

// OK, or InvalidArgument naming the first rule broken: a non-empty prompt of
// ids inside the vocabulary that leaves room in the context;
// max_new_tokens > 0 and prompt + max_new_tokens <= context; temperature
// finite and >= 0; top_p in (0, 1]; top_k >= 0; the controls in their
// ranges, their token ids inside the vocabulary, at most kMaxLogitBias
// biases and kMaxStopTokenIds stop ids; logprobs in [-1, kMaxTopLogprobs].
absl::Status ValidateGeneration(const GenerationParams& params,
                                const GenerationLimits& limits);

// Longest structured-output spec (JSON schema, regex, grammar), bytes.
inline constexpr size_t kMaxStructuredOutputBytes = 256 << 10;

}  // namespace latentkv

#endif  // LATENTKV_COMMON_GENERATION_RULES_H_
