// Rotary-pair selection by search, for the calibrated KV-Latent init.
//
// The engine's RoPE table is per layer, so a layer keeps one set of d_qk/2
// rotary pairs for all heads. Cheap per-pair statistics (calibration.h) rank
// pairs one at a time; this instead scores whole kept SETS by the exact
// local damage they do: for every query head h and query token t, with p the
// original attention distribution and p' the one computed from the kept
// pairs only (same 1/sqrt(hs) logit scale),
//   error(kept) = sum_{docs, h, t} || W_o,h sum_s (p(t,s) - p'(t,s)) v_s ||^2
// i.e. how far the layer's attention output (after the output projection)
// moves. Values and W_o are the original ones (V compression is separate).
// The set minimising it is found by enumeration when there are few subsets,
// else by greedy backward elimination (drop, one at a time, the pair whose
// removal adds the least error).
#ifndef LATENTKV_MODEL_TRANSFORM_PAIR_SEARCH_H_
#define LATENTKV_MODEL_TRANSFORM_PAIR_SEARCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/weights.h"

namespace latentkv::model::transform {

struct PairSearchOptions {
  // Documents (the first ones given) whose activations are kept and scored.
  // Memory: tokens * layers * ((H + K) * d_qk + K * d_vo) doubles. Default 32.
  int max_docs = 32;
  // Enumerate every kept set when C(d_qk_src/2, d_qk/2) <= this; otherwise
  // greedy backward elimination. Default 256.
  int64_t max_exhaustive = 256;
};

// Per layer, the d_qk/2 kept pair indices (ascending) minimising the error
// above over `docs`. Errors: InvalidArgument (d_qk odd, < 2 or above a
// layer's d_qk; no docs), those of Forward.
absl::StatusOr<std::vector<std::vector<int>>> SearchRotaryPairs(
    const ModelWeights& weights, const std::vector<std::vector<int32_t>>& docs,
    int d_qk, const PairSearchOptions& options = {});

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_PAIR_SEARCH_H_
