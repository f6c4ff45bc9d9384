// The serving engine of one worker: continuous batching over a ModelRunner
// and a paged KV cache, on its own thread.
//
// Requests enter through Submit() from any thread and leave through their
// EventSink, called on the engine thread: one event per generated token, then
// a final event with the finish reason (or an error status). Cancel() stops a
// request and frees its KV pages before its final event is delivered.
// Thread-safety: Submit, Cancel, Stats and Stop are thread-safe.
#ifndef LATENTKV_WORKER_ENGINE_ENGINE_H_
#define LATENTKV_WORKER_ENGINE_ENGINE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/cache/prefix_index.h"
#include "worker/engine/model_runner.h"
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
  // With a listener: the longest idle gap between OnStep calls (keep-alives
  // let the other ranks tell a quiet leader from a dead one). > 0.
  int32_t keepalive_ms = 1000;
  // Local prefix caching: full-cache sequences leave their whole pages
  // indexed (worker/cache/prefix_index.h) and later prompts with the same
  // leading tokens share them instead of recomputing them; cached pages are
  // evicted (LRU) before any running sequence is preempted. Off with a
  // step_listener (tensor parallelism: the followers could not mirror the
  // shared pages). Compressed requests neither use nor fill it.
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
  // Decode role: the prompt's KV computed elsewhere and the first token
  // sampled there. The engine imports the rows (shapes must match; on any
  // failure it prefills locally instead), emits import_first_token as the
  // first generated token and decodes from there.
  // Prefix mode (import_first_token = -1): the rows are a full cache of the
  // prompt's first n tokens (every layer and head holding positions 0..n-1,
  // n < prompt length, e.g. from the KV store); the engine prefills the rest.
  std::shared_ptr<const KvSnapshot> import_kv;
  int32_t import_first_token = -1;
};

// What the engine reports about a request.
struct GenerationEvent {
  int32_t token = -1;                         // a new token, or -1
  FinishReason finish = FinishReason::kNone;  // set on the final event
  absl::Status status;                   // non-OK: the request failed (final)
  std::shared_ptr<const KvSnapshot> kv;  // final event of an export_kv request
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
  std::vector<int64_t> kv_layer_bytes_in_use;  // [num_layers] page bytes
  // Local prefix cache.
  int64_t prefix_cached_blocks = 0;   // blocks held by the index now
  int64_t prefix_cached_pages = 0;    // their page references
  int64_t prefix_lookup_tokens = 0;   // prompt tokens looked up
  int64_t prefix_hit_tokens = 0;      // prompt tokens shared, not computed
  int64_t prefix_hits = 0;            // requests that shared >= 1 block
  int64_t prefix_evicted_blocks = 0;  // blocks evicted for room
};

// The local prefix cache's changes for the coordinator's router: events
// numbered 1, 2, ... in order (one event = keys stored, or keys removed).
struct PrefixCacheUpdate {
  int32_t block_tokens = 0;  // tokens per block (the page size)
  // True: `events` is one stored event with every key held now, replacing
  // whatever the reader had; it reflects events up to last_seq.
  bool snapshot = false;
  uint64_t first_seq = 0;  // number of events[0] (not a snapshot)
  uint64_t last_seq = 0;   // number of the newest event reflected
  std::vector<PrefixEvent> events;
};

class Engine {
 public:
  // With tensor parallelism, `weights` is rank 0's shard and `comm` the
  // group's communicator (not owned; null for one rank).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::shared_ptr<const model::ModelWeights> weights,
      std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
      Communicator* comm = nullptr);
  ~Engine();  // Stop()s

  // Validates and queues a request. InvalidArgument for a bad request
  // (empty prompt, tokens outside the vocabulary, prompt + 1 beyond the
  // context, bad sampling values); ResourceExhausted when the queue is full or
  // the request can never fit in the KV memory. On error `sink` is not called.
  absl::Status Submit(GenerationRequest request, EventSink sink);
  // Cancels a live request: its final event has kCancelled. No-op if unknown.
  void Cancel(const std::string& id);
  // A snapshot refreshed after every engine step (so it may lag the events
  // of the step that just ran).
  EngineStats Stats() const;
  // Finishes in-flight steps, fails queued/running requests with Unavailable
  // and joins the thread. Idempotent.
  void Stop();

  const model::ModelConfig& config() const { return runner_->config(); }
  // OK while the tensor-parallel group works; the error that broke it.
  absl::Status group_status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fatal_;
  }
  // KV shapes of this engine's cache (per layer), for transfer layouts.
  std::vector<LayerKvShape> kv_shapes() const { return runner_->KvShapes(); }
  DType kv_dtype() const { return options_.kv.dtype; }
  // Bytes of one KV page of `layer`: Stats().kv_layer_bytes_in_use[layer] /
  // this = the layer's pages in use.
  int64_t kv_page_bytes(int32_t layer) const {
    return cache_->page_bytes(layer);
  }
  // Whether this engine keeps a local prefix cache.
  bool prefix_caching() const { return prefix_ != nullptr; }
  // Tokens of the longest prefix of `tokens` (whole pages) in the local
  // prefix cache as of the last step; 0 without one. Thread-safe.
  int64_t LocalPrefixTokens(const std::vector<int32_t>& tokens) const;
  // Prefix-cache events after `after_seq`, or a snapshot when `snapshot`
  // is asked for or those events were dropped (bounded log). Thread-safe.
  PrefixCacheUpdate PrefixUpdates(uint64_t after_seq, bool snapshot) const;
  // The server's compression plan, or null when it serves a full cache.
  const ResidencyPlan* residency_plan() const { return plan_.get(); }

 private:
  Engine() = default;
  void Loop();
  void Step();
  void Finish(Sequence* seq, FinishReason reason, absl::Status status);
  // Fails every live request with `status` (the group is broken).
  void FailAll(const absl::Status& status);

  std::shared_ptr<const model::ModelWeights> weights_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvPools> pools_;  // the pools of cache_'s pages
  std::unique_ptr<Scheduler> scheduler_;
  std::shared_ptr<const ResidencyPlan> plan_;  // null: full cache
  EngineOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Incoming {
    std::unique_ptr<Sequence> seq;
    EventSink sink;
  };
  std::vector<Incoming> inbox_;       // guarded by mu_
  std::vector<std::string> cancels_;  // guarded by mu_
  int64_t queued_ = 0;                // inbox + waiting; guarded by mu_
  EngineStats stats_;                 // guarded by mu_ (snapshot)
  bool stop_ = false;                 // guarded by mu_
  std::thread thread_;
  uint64_t next_arrival_ = 0;
  int64_t evicted_total_ = 0;                  // engine thread
  int64_t imports_ = 0, import_failures_ = 0;  // engine thread
  // Imports a transferred KV into a queued sequence (engine thread); false
  // when it falls back to a local prefill.
  bool Import(Sequence* seq);
  std::vector<std::string> released_;  // engine thread: for the listener
  std::chrono::steady_clock::time_point last_listened_;  // engine thread
  absl::Status fatal_;  // guarded by mu_: set when the group broke

  // Local prefix cache (engine thread; null when off) and what readers see
  // of it (guarded by mu_).
  std::unique_ptr<PrefixIndex> prefix_;
  std::deque<std::pair<uint64_t, PrefixEvent>> prefix_log_;
  uint64_t prefix_seq_ = 0;  // number of the newest event
  absl::flat_hash_set<BlockKey> prefix_keys_;
  int64_t prefix_lookup_tokens_ = 0, prefix_hit_tokens_ = 0;  // engine thread
  int64_t prefix_hits_ = 0, prefix_evicted_ = 0;              // engine thread
  // Shares a cached prefix with a full-cache sequence being admitted with
  // nothing cached (engine thread; the scheduler's admit hook).
  void AttachPrefix(Sequence* seq);
  // Indexes a full-cache sequence's whole blocks (engine thread).
  void IndexPrefix(const Sequence& seq);
  // Moves the index's events into the log (engine thread; takes mu_).
  void PublishPrefixEvents();

  // Engine-thread state.
  std::unordered_map<std::string, EventSink> sinks_;
  std::vector<float> logits_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_ENGINE_H_
