// Token sampling from logits: greedy, temperature, top-k, top-p, min-p,
// seeded, after the logit controls (penalties, biases).
//
// Order of operations (as in vLLM): ApplyLogitControls first (repetition,
// frequency and presence penalties, logit_bias; common/generation_rules.h).
// Then temperature == 0 means greedy (argmax, lowest id on ties). Otherwise
// logits / temperature, softmax, keep the top_k most likely (0 = all), then
// the smallest prefix of the probability-sorted tokens whose mass reaches
// top_p (always >= 1 token), then drop those under min_p times the most
// likely one's probability, renormalise, draw with the sequence's RNG.
// Thread-safety: Sampler is stateless; SamplerRng is per sequence.
#ifndef LATENTKV_WORKER_ENGINE_SAMPLER_H_
#define LATENTKV_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "common/generation_rules.h"

namespace latentkv::worker {

struct SamplingOptions {
  float temperature = 0.0f;  // >= 0; 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0 = no limit
  uint64_t seed = 0;         // RNG seed of the sequence
  LogitControls controls;    // penalties, biases, min_p, stop token ids
  // -1: no log-probabilities; 0..kMaxTopLogprobs: each generated token's
  // log-probability and that many most likely alternatives (TokenLogprobs).
  int32_t logprobs = -1;
  // With logprobs >= 0: the prompt tokens' too (GenerationEvent::
  // prompt_logprobs); the prompt is then computed in full.
  bool prompt_logprobs = false;
};

// Log-probabilities of one generated token under the model: the log-softmax
// of the raw logits, before temperature, penalties, biases and truncation
// (vLLM's default "raw_logprobs"), so they do not depend on how the token
// was drawn. Natural log; finite or -inf.
struct TokenLogprobs {
  float logprob = 0.0f;  // of the token generated
  // The most likely tokens, best first (ties: lower id first).
  std::vector<std::pair<int32_t, float>> top;
};

// TokenLogprobs of `token` and the `top_n` (0..vocab) most likely tokens of
// logits[vocab]; the log-sum-exp is accumulated in double. NaN logits count
// as -inf. `scratch` avoids reallocation.
TokenLogprobs ComputeLogprobs(const float* logits, int32_t vocab, int32_t token,
                              int32_t top_n,
                              std::vector<std::pair<float, int32_t>>* scratch);

// Per-sequence random stream; the same seed gives the same draws.
using SamplerRng = std::mt19937_64;

// Applies options.controls' penalties and biases to logits[vocab] in place
// (nothing when !controls.ChangesLogits()). `prompt` and `generated` are the
// sequence's tokens so far.
void ApplyLogitControls(float* logits, int32_t vocab,
                        const LogitControls& controls,
                        absl::Span<const int32_t> prompt,
                        absl::Span<const int32_t> generated);

// Samples one token from logits[vocab] (controls already applied).
// `scratch` avoids reallocation.
int32_t SampleToken(const float* logits, int32_t vocab,
                    const SamplingOptions& options, SamplerRng& rng,
                    std::vector<std::pair<float, int32_t>>* scratch);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_SAMPLER_H_
