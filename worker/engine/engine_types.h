// The types of the engine's interface: options, requests, events, stats.
#ifndef LATENTKV_WORKER_ENGINE_ENGINE_TYPES_H_
#define LATENTKV_WORKER_ENGINE_ENGINE_TYPES_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/kv_parking.h"
#include "worker/engine/rank_kv_store.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"
#include "worker/engine/step_listener.h"
#include "worker/residency/policy.h"

namespace latentkv::worker {

struct EngineOptions {
  // Page size, KV memory bound and KV dtype (f32, bf16, f16, fp8_e4m3; fp8
  // with static per-(layer, KV head) scales, ModelRunner::Fp8KvScales).
  KvCacheOptions kv;
  SchedulerOptions scheduler;  // batch and queue bounds
  // The server's KV compression (SpindleKV, capacity); policy "none" with no
  // capacity serves a full cache. Requests may ask for it or for full.
  ResidencyOptions residency;
  // Tensor parallelism (leader side): sees every step before it runs; not
  // owned, must outlive the engine. Null for a single-rank worker.
  StepListener* step_listener = nullptr;
  // The shared kvstore as this rank sees it (its KV heads): sequences with
  // GenerationRequest::publish_kv publish their blocks through it when they
  // finish, and a group follower fetches its heads of a stored prefix the
  // leader imports (GenerationRequest::import_store_keys). Not owned; null
  // (default): no store.
  RankKvStore* kv_store = nullptr;
  // Rank-to-rank prefill -> decode transfers: where this rank parks its KV
  // heads of GenerationRequest::park_kv sequences (prefill side), and how a
  // group follower pulls its heads of a GenerationRequest::import_pull
  // (decode side). Not owned; null (default): none.
  KvParking* kv_parking = nullptr;
  RankKvPuller* kv_puller = nullptr;
  // With a listener: the longest idle gap between OnStep calls (keep-alives
  // let the other ranks tell a quiet leader from a dead one). > 0.
  int32_t keepalive_ms = 1000;
  // Local prefix caching: full-cache sequences leave their whole pages
  // indexed (worker/cache/prefix_index.h) and later prompts with the same
  // leading tokens share them instead of recomputing them; cached pages are
  // evicted (LRU) before any running sequence is preempted. With a
  // step_listener (tensor parallelism) every index, attach and evict goes to
  // the followers as a GroupKvOp, in order, and their own PrefixIndex makes
  // the same change. Compressed requests neither use nor fill it.
  bool prefix_caching = true;
  // Multiply a copy of the weight matrices packed into the backend's
  // preferred layout (Backend::PrefersPanels; on AVX2 CPUs without AVX-512:
  // 16-row panels, bench/RESULTS.md), made once at start: faster decode
  // batches and prefill for the weights' bytes again in memory. False: the
  // loaded (e.g. memory-mapped) matrices as they are.
  bool pack_weights = true;
  // Bound on the prefix events kept for PrefixUpdates(); older ones are
  // dropped and a reader that missed them gets a snapshot instead.
  int32_t max_prefix_events = 4096;
  // Structured output's masks (token_constraint.h). kPrefetch: every
  // constrained row's mask is computed on a helper thread during the
  // forward pass (mask_prefetch.h; free when the forward runs on a device).
  // kLazy: the row is sampled first and the mask computed only when the
  // constraint refuses the token (exact for greedy and for untruncated
  // sampling; truncated sampling always masks first), so most steps cost one
  // token check instead of a vocabulary walk: better when the forward keeps
  // the CPU busy. kAuto: kPrefetch on a device backend, kLazy on the host.
  enum class MaskMode { kAuto, kPrefetch, kLazy };
  MaskMode structured_output_masks = MaskMode::kAuto;
  // Called on the engine thread after each step that ran a batch, with its
  // wall time (schedule, forward, sampling, events); must be cheap (e.g. a
  // histogram observation). Null (default): none.
  std::function<void(std::chrono::nanoseconds)> on_step;
};

// Which KV cache a request gets.
enum class KvMode {
  kServerDefault,  // the server's configured compression (maybe none)
  kFull,           // every token, uncompressed
  kCompressed,     // the server's compression; InvalidArgument if none
};

struct GenerationRequest {
  std::string id;               // unique among live requests
  std::vector<int32_t> prompt;  // token ids, non-empty
  int32_t max_new_tokens = 16;  // > 0
  SamplingOptions sampling;
  bool ignore_eos = false;
  KvMode kv_mode = KvMode::kServerDefault;
  // Prefill role: the final event carries the sequence's KV (the prompt's
  // rows, after the residency policy) for transfer to a decode worker.
  bool export_kv = false;
  // The shared kvstore's prefix cache: when the request finishes (not
  // cancelled or failed), the whole blocks of its tokens' KV are published
  // through EngineOptions::kv_store, each rank of a group its own KV heads.
  // Full-cache requests only (a compressed cache is not a reusable prefix).
  bool publish_kv = false;
  // Prefill role, rank-to-rank: instead of export_kv, each rank of the group
  // parks its own KV heads (rows and residency state) under the request id
  // in EngineOptions::kv_parking when it finishes, for the decode group's
  // ranks to pull.
  bool park_kv = false;
  // Decode role: the prompt's KV computed elsewhere and the first token
  // sampled there. The engine imports the rows (shapes must match; on any
  // failure it prefills locally instead), emits import_first_token as the
  // first generated token and decodes from there.
  // Prefix mode (import_first_token = -1): the rows are a full cache of the
  // prompt's first n tokens (every layer and head holding positions 0..n-1,
  // n < prompt length, e.g. from the KV store); the engine prefills the rest.
  std::shared_ptr<const KvSnapshot> import_kv;
  int32_t import_first_token = -1;
  // Prefix mode in a tensor-parallel group: import_kv holds only this
  // rank's KV heads of the stored blocks `import_store_keys`; every other
  // rank fetches its heads of the same blocks from its kv_store, and when
  // any rank cannot, no rank imports (the group prefills the prompt).
  // Empty: import_kv holds every KV head (split over the group here).
  std::vector<uint64_t> import_store_keys;
  // A whole-prompt import (import_first_token >= 0) in a tensor-parallel
  // group, rank-to-rank: import_kv holds only this rank's KV heads, pulled
  // from the prefill ranks `import_pull` names; every other rank pulls its
  // own (EngineOptions::kv_puller), and when any cannot, no rank imports.
  KvPull import_pull;
  // With sampling.logprobs >= 0: the first token's log-probabilities, as the
  // prefill worker computed them.
  std::optional<TokenLogprobs> import_first_logprobs;
  // Structured output: the allowed tokens at each step (null: any). An
  // imported first token must be one it allows. Shared so requests stay
  // copyable; one sequence at a time may use it (it is stateful).
  std::shared_ptr<TokenConstraint> constraint;
  // Embedding: the prompt runs through the model and nothing is generated;
  // the final event (finish kStop) carries the mean, over the prompt's
  // positions, of the final RMS-normed hidden state. The whole prompt is
  // computed here (no cached prefix shared, no KV imported) in a full cache
  // (no residency policy: every position attends to every earlier one);
  // sampling options, constraints and KV export do not apply.
  bool embed = false;
};

// What the engine reports about a request.
struct GenerationEvent {
  int32_t token = -1;  // a new token, or -1
  // The token's log-probabilities when the request asked for them.
  std::optional<TokenLogprobs> logprobs;
  // sampling.prompt_logprobs: the prompt's (positions 1..), once, with the
  // first event after the prompt is computed.
  std::vector<TokenLogprobs> prompt_logprobs;
  FinishReason finish = FinishReason::kNone;  // set on the final event
  absl::Status status;                   // non-OK: the request failed (final)
  std::shared_ptr<const KvSnapshot> kv;  // final event of an export_kv request
  // Final event of an embed request: [hidden_size].
  std::vector<float> embedding;
};
using EventSink = std::function<void(const GenerationEvent&)>;

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;
  int64_t kv_pages_in_use = 0;
  int64_t kv_pages_total = 0;
  int64_t kv_bytes_in_use = 0;
  int64_t kv_bytes_capacity = 0;
  int64_t steps = 0;
  int64_t tokens_generated = 0;
  int64_t preemptions = 0;
  int64_t kv_evicted_slots = 0;    // slots dropped by residency policies
  int64_t kv_imports = 0;          // requests started from a transferred KV
  int64_t kv_import_failures = 0;  // transferred KVs that did not fit/match
  // KV bytes the group's other ranks pulled for themselves in rank-to-rank
  // transfers (this rank's own are counted by its caller).
  int64_t kv_peer_pull_bytes = 0;
  std::vector<int64_t> kv_layer_bytes_in_use;  // [num_layers] page bytes
  // Local prefix cache.
  int64_t prefix_cached_blocks = 0;   // blocks held by the index now
  int64_t prefix_cached_pages = 0;    // their page references
  int64_t prefix_lookup_tokens = 0;   // prompt tokens looked up
  int64_t prefix_hit_tokens = 0;      // prompt tokens shared, not computed
  int64_t prefix_hits = 0;            // requests that shared >= 1 block
  int64_t prefix_evicted_blocks = 0;  // blocks evicted for room
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_ENGINE_TYPES_H_
