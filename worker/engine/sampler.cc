#include "worker/engine/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace latentkv::worker {
namespace {

using Candidate = std::pair<float, int32_t>;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Descending value, then ascending id: a strict weak order (NaN logits are
// mapped to -inf before any comparison).
bool Before(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

inline float Sanitize(float logit) {
  return std::isnan(logit) ? kNegInf : logit;
}

int32_t Argmax(const float* logits, int32_t vocab) {
  int32_t best = 0;
  float best_logit = kNegInf;
  for (int32_t i = 0; i < vocab; ++i) {
    if (logits[i] > best_logit) {  // strict: lowest id wins ties; skips NaN
      best_logit = logits[i];
      best = i;
    }
  }
  return best;
}

// Largest k at which top-k uses a bounded heap (one comparison per rejected
// token) rather than nth_element over the whole vocabulary.
constexpr int32_t kHeapTopK = 512;

// Leaves the top k logits (by Before) in c[0, k), unordered.
void SelectTopK(const float* logits, int32_t vocab, int32_t k,
                std::vector<Candidate>* scratch) {
  if (k > kHeapTopK) {
    scratch->resize(vocab);
    Candidate* c = scratch->data();
    for (int32_t i = 0; i < vocab; ++i) c[i] = {Sanitize(logits[i]), i};
    std::nth_element(c, c + (k - 1), c + vocab, Before);
    return;
  }
  scratch->resize(k);
  Candidate* c = scratch->data();
  for (int32_t i = 0; i < k; ++i) c[i] = {Sanitize(logits[i]), i};
  // Heap ordered by Before: its front is the worst of the current top k.
  std::make_heap(c, c + k, Before);
  for (int32_t i = k; i < vocab; ++i) {
    const Candidate cand{Sanitize(logits[i]), i};
    if (Before(cand, c[0])) {
      std::pop_heap(c, c + k, Before);
      c[k - 1] = cand;
      std::push_heap(c, c + k, Before);
    }
  }
}

// Given weights in c[0, n), reorders them so that c[0, kept) holds the
// smallest Before-prefix of the weight-sorted tokens whose mass reaches
// `target` (at least one token). Expected O(n): a quickselect on mass rather
// than a full sort. Returns kept and sets *kept_mass.
int32_t Nucleus(Candidate* c, int32_t n, double target, double* kept_mass) {
  int32_t lo = 0, hi = n;  // c[0, lo) kept, c[hi, n) dropped
  double acc = 0.0;        // mass of c[0, lo)
  while (hi - lo > 64) {
    const int32_t mid = lo + (hi - lo) / 2;
    std::nth_element(c + lo, c + mid, c + hi, Before);
    double upper = 0.0;
    for (int32_t i = lo; i < mid; ++i) upper += c[i].first;
    if (acc + upper >= target) {
      hi = mid;
    } else {
      acc += upper;
      lo = mid;
    }
  }
  std::sort(c + lo, c + hi, Before);
  for (int32_t i = lo; i < hi; ++i) {
    acc += c[i].first;
    if (acc >= target) {
      *kept_mass = acc;
      return i + 1;
    }
  }
  *kept_mass = acc;  // rounding: keep everything left
  return hi;
}

// Buckets of weights in [0, 1] by their float bits (monotone for
// non-negative floats): exponent and the top 4 mantissa bits, so one bucket
// spans at most 1/16 of an octave.
constexpr int kBucketShift = 19;
constexpr int kNumBuckets = (0x3F800000 >> kBucketShift) + 1;  // up to 1.0f

inline int Bucket(float w) {
  return static_cast<int>(std::bit_cast<uint32_t>(w) >> kBucketShift);
}

// Same contract as Nucleus(), weights in [0, 1]. One histogram pass of mass
// per bucket finds the bucket where the cumulative mass crosses `target`;
// tokens in higher buckets are kept as they are and only the boundary bucket
// is resolved exactly.
int32_t NucleusByBuckets(Candidate* c, int32_t n, double target,
                         double* kept_mass) {
  std::array<double, kNumBuckets> mass{};
  for (int32_t i = 0; i < n; ++i) mass[Bucket(c[i].first)] += c[i].first;
  double acc = 0.0;
  int b = kNumBuckets - 1;
  for (; b >= 0; --b) {
    if (acc + mass[b] >= target) break;
    acc += mass[b];
  }
  if (b < 0) {  // rounding: keep everything
    *kept_mass = acc;
    return n;
  }
  Candidate* above = std::partition(
      c, c + n, [b](const Candidate& x) { return Bucket(x.first) > b; });
  Candidate* boundary = std::partition(
      above, c + n, [b](const Candidate& x) { return Bucket(x.first) == b; });
  double boundary_mass = 0.0;
  const int32_t r = Nucleus(above, static_cast<int32_t>(boundary - above),
                            target - acc, &boundary_mass);
  *kept_mass = acc + boundary_mass;
  return static_cast<int32_t>(above - c) + r;
}

}  // namespace

// Notes on the semantics (matching HF's TopK then TopP warpers):
// - temperature <= 0 (or NaN) is greedy and consumes no random numbers;
//   otherwise exactly one uniform double is drawn per call.
// - top_p's mass is measured on the distribution renormalised over the top_k
//   survivors; top_p >= 1 disables it, top_p <= 0 keeps only the top token.
//   Tokens whose float weights tie are ordered by id at the nucleus boundary.
// - NaN logits count as -inf. If the largest logit is not finite (all -inf,
//   or some +inf) the result is the greedy argmax.
int32_t SampleToken(const float* logits, int32_t vocab,
                    const SamplingOptions& options, SamplerRng& rng,
                    std::vector<std::pair<float, int32_t>>* scratch) {
  if (vocab <= 0) return 0;
  if (!(options.temperature > 0.0f)) return Argmax(logits, vocab);

  // 1. Candidates: the top_k logits, or all of them.
  int32_t k = vocab;
  if (options.top_k > 0 && options.top_k < vocab) {
    k = options.top_k;
    SelectTopK(logits, vocab, k, scratch);
  } else {
    scratch->resize(vocab);
    Candidate* c = scratch->data();
    for (int32_t i = 0; i < vocab; ++i) c[i] = {Sanitize(logits[i]), i};
  }
  Candidate* c = scratch->data();

  // 2. Unnormalised probabilities exp((logit - max) / T), in place.
  float max_logit = kNegInf;
  for (int32_t i = 0; i < k; ++i) max_logit = std::max(max_logit, c[i].first);
  if (!std::isfinite(max_logit)) return Argmax(logits, vocab);
  const float inv_t = 1.0f / options.temperature;
  double total = 0.0;
  for (int32_t i = 0; i < k; ++i) {
    const float l = c[i].first;
    const float w = l == kNegInf ? 0.0f : std::exp((l - max_logit) * inv_t);
    c[i].first = w;
    total += w;
  }

  // 3. Nucleus.
  int32_t kept = k;
  double kept_mass = total;
  if (options.top_p < 1.0f) {
    const double target = std::max(0.0, double{options.top_p}) * total;
    kept = NucleusByBuckets(c, k, target, &kept_mass);
  }

  // 4. min_p, relative to the most likely token (weight 1).
  if (options.controls.min_p > 0.0f) {
    const float floor = options.controls.min_p;
    int32_t w = 0;
    kept_mass = 0.0;
    for (int32_t i = 0; i < kept; ++i) {
      if (c[i].first >= floor) {
        kept_mass += c[i].first;
        c[w++] = c[i];
      }
    }
    kept = w;
  }

  // 5. Draw.
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double u = uniform(rng) * kept_mass;
  double cum = 0.0;
  int32_t last_positive = -1;
  for (int32_t i = 0; i < kept; ++i) {
    if (c[i].first <= 0.0f) continue;
    cum += c[i].first;
    last_positive = c[i].second;
    if (u < cum) return last_positive;
  }
  // u within rounding of kept_mass (the max token always has weight 1).
  return last_positive >= 0 ? last_positive : Argmax(logits, vocab);
}

TokenLogprobs ComputeLogprobs(const float* logits, int32_t vocab, int32_t token,
                              int32_t top_n, std::vector<Candidate>* scratch) {
  TokenLogprobs out;
  if (vocab <= 0) return out;
  float max_logit = kNegInf;
  for (int32_t i = 0; i < vocab; ++i) {
    max_logit = std::max(max_logit, Sanitize(logits[i]));
  }
  double lse = max_logit;
  if (std::isfinite(max_logit)) {
    double sum = 0.0;
    for (int32_t i = 0; i < vocab; ++i) {
      const float l = Sanitize(logits[i]);
      if (l != kNegInf) sum += std::exp(double{l} - max_logit);
    }
    lse = max_logit + std::log(sum);
  }
  auto logprob = [&](float l) {
    l = Sanitize(l);
    return l == kNegInf || !std::isfinite(lse)
               ? kNegInf
               : static_cast<float>(double{l} - lse);
  };
  if (token >= 0 && token < vocab) out.logprob = logprob(logits[token]);
  top_n = std::clamp(top_n, 0, vocab);
  if (top_n > 0) {
    SelectTopK(logits, vocab, top_n, scratch);
    std::sort(scratch->begin(), scratch->begin() + top_n, Before);
    for (int32_t i = 0; i < top_n; ++i) {
      const int32_t id = (*scratch)[i].second;
      out.top.emplace_back(id, logprob(logits[id]));
    }
  }
  return out;
}

void ApplyLogitControls(float* logits, int32_t vocab,
                        const LogitControls& controls,
                        absl::Span<const int32_t> prompt,
                        absl::Span<const int32_t> generated) {
  if (!controls.ChangesLogits()) return;
  if (controls.repetition_penalty != 1.0f) {
    const float rp = controls.repetition_penalty;
    // Each distinct token once, whichever part it appears in.
    absl::flat_hash_set<int32_t> seen;
    for (absl::Span<const int32_t> part : {prompt, generated}) {
      for (int32_t t : part) {
        if (t < 0 || t >= vocab || !seen.insert(t).second) continue;
        logits[t] = logits[t] > 0.0f ? logits[t] / rp : logits[t] * rp;
      }
    }
  }
  if (controls.frequency_penalty != 0.0f || controls.presence_penalty != 0.0f) {
    absl::flat_hash_map<int32_t, int32_t> counts;
    for (int32_t t : generated) {
      if (t >= 0 && t < vocab) ++counts[t];
    }
    for (const auto& [t, n] : counts) {
      logits[t] -= controls.frequency_penalty * static_cast<float>(n) +
                   controls.presence_penalty;
    }
  }
  for (const auto& [t, bias] : controls.logit_bias) {
    if (t >= 0 && t < vocab) logits[t] += bias;
  }
}

}  // namespace latentkv::worker
