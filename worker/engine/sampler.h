// Token sampling from logits: greedy, temperature, top-k, top-p, seeded.
//
// Order of operations (as in vLLM/HF): temperature == 0 means greedy
// (argmax, lowest id on ties). Otherwise logits / temperature, softmax, keep
// the top_k most likely (0 = all), then the smallest prefix of the
// probability-sorted tokens whose mass reaches top_p (always >= 1 token),
// renormalise, draw with the sequence's RNG.
// Thread-safety: Sampler is stateless; SamplerRng is per sequence.
#ifndef LATENTKV_WORKER_ENGINE_SAMPLER_H_
#define LATENTKV_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

namespace latentkv::worker {

struct SamplingOptions {
  float temperature = 0.0f;  // >= 0; 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0 = no limit
  uint64_t seed = 0;         // RNG seed of the sequence
};

// Per-sequence random stream; the same seed gives the same draws.
using SamplerRng = std::mt19937_64;

// Samples one token from logits[vocab]. `scratch` avoids reallocation.
int32_t SampleToken(const float* logits, int32_t vocab,
                    const SamplingOptions& options, SamplerRng& rng,
                    std::vector<std::pair<float, int32_t>>* scratch);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_SAMPLER_H_
