// One generation request inside the engine: its tokens, progress, sampling
// state and KV pages.
#ifndef LATENTKV_WORKER_ENGINE_SEQUENCE_H_
#define LATENTKV_WORKER_ENGINE_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/rank_kv_store.h"
#include "worker/engine/sampler.h"
#include "worker/engine/token_constraint.h"

namespace latentkv::worker {

class SequencePolicy;  // worker/residency; the scheduler never calls it

enum class FinishReason { kNone, kStop, kLength, kCancelled };

struct Sequence {
  std::string id;
  uint64_t arrival = 0;         // admission order; smaller = older
  std::vector<int32_t> tokens;  // prompt followed by generated tokens
  int32_t prompt_len = 0;
  // Tokens whose K/V are in the cache. Invariant: num_cached <= tokens.size();
  // the sequence needs a forward pass over tokens[num_cached:].
  int64_t num_cached = 0;
  int32_t max_new_tokens = 0;    // generation stops at this many new tokens
  int32_t max_total_tokens = 0;  // context limit (prompt + generated)
  bool ignore_eos = false;
  // End-of-generation ids: the config's EOS first, then its extra ones.
  std::vector<int32_t> eos_ids;
  SamplingOptions sampling;
  SamplerRng rng;
  SequenceKv kv;  // capacity set at admission when the policy bounds it
  // Residency policy state (SpindleKV, capacity), or null for a full cache.
  std::shared_ptr<SequencePolicy> residency;
  int64_t evicted_reported = 0;
  bool export_kv = false;
  bool publish_kv = false;                      // GenerationRequest::publish_kv
  std::shared_ptr<const KvSnapshot> import_kv;  // dropped once imported
  int32_t import_first_token = -1;
  std::vector<uint64_t> import_store_keys;  // see GenerationRequest
  bool park_kv = false;                     // see GenerationRequest
  KvPull import_pull;                       // see GenerationRequest
  std::optional<TokenLogprobs> import_first_logprobs;
  // Structured output (null: none): masks each sampled row; fed every
  // generated token; Done() finishes the sequence.
  std::shared_ptr<TokenConstraint> constraint;
  // The constraint's mask for this step's sampled row, when MaskPrefetch
  // filled it during the forward pass (mask_ready), and how that went.
  std::vector<uint32_t> mask;
  absl::Status mask_status;
  bool mask_ready = false;
  // sampling.prompt_logprobs: those of prompt positions 1.. computed so far
  // (a preempted sequence recomputes without adding twice), and whether
  // they went out with an event.
  std::vector<TokenLogprobs> prompt_lp;
  bool prompt_lp_sent = false;
  // GenerationRequest::embed: the sum of the prompt's final normed hidden
  // states over the positions computed so far (float64), and how many.
  bool embed = false;
  std::vector<double> embed_sum;
  int64_t embed_rows = 0;
  bool running = false;
  int32_t preemptions = 0;

  int32_t num_generated() const {
    return static_cast<int32_t>(tokens.size()) - prompt_len;
  }
  // Tokens still to run through the model before the next sample.
  int64_t pending() const {
    return static_cast<int64_t>(tokens.size()) - num_cached;
  }
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_SEQUENCE_H_
