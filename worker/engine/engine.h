// The serving engine of one worker: EngineCore (engine_core.h: continuous
// batching over a ModelRunner and a paged KV cache, one synchronous Step()
// at a time) on its own thread, behind a mailbox.
//
// Requests enter through Submit() from any thread and leave through their
// EventSink, called on the engine thread: one event per generated token, then
// a final event with the finish reason (or an error status). Cancel() stops a
// request and frees its KV pages before its final event is delivered.
// Thread-safety: Submit, Cancel, Stats and Stop are thread-safe.
#ifndef LATENTKV_WORKER_ENGINE_ENGINE_H_
#define LATENTKV_WORKER_ENGINE_ENGINE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/cache/prefix_index.h"
#include "worker/engine/engine_core.h"
#include "worker/engine/engine_types.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"
#include "worker/engine/step_listener.h"
#include "worker/residency/policy.h"

namespace latentkv::worker {

class Engine {
 public:
  // With tensor parallelism, `weights` is rank 0's shard and `comm` the
  // group's communicator (not owned; null for one rank).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::shared_ptr<const model::ModelWeights> weights,
      std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
      Communicator* comm = nullptr);
  ~Engine();  // Stop()s

  // Validates (EngineCore::Prepare: the shared admission rules, the KV
  // memory bound) and queues a request; ResourceExhausted when the queue is
  // full, Unavailable when stopping or the group broke. On error `sink` is
  // not called.
  absl::Status Submit(GenerationRequest request, EventSink sink);
  // Cancels a live request: its final event has kCancelled. No-op if unknown.
  void Cancel(const std::string& id);
  // A snapshot refreshed after every engine step (so it may lag the events
  // of the step that just ran).
  EngineStats Stats() const;
  // Finishes in-flight steps, fails queued/running requests with Unavailable
  // and joins the thread. Idempotent.
  void Stop();

  const model::ModelConfig& config() const { return core_->config(); }
  // OK while the tensor-parallel group works; the error that broke it.
  absl::Status group_status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fatal_;
  }
  // KV shapes of this engine's cache (per layer), for transfer layouts.
  std::vector<LayerKvShape> kv_shapes() const { return core_->kv_shapes(); }
  DType kv_dtype() const { return core_->kv_dtype(); }
  // Bytes of one KV page of `layer`: Stats().kv_layer_bytes_in_use[layer] /
  // this = the layer's pages in use.
  int64_t kv_page_bytes(int32_t layer) const {
    return core_->kv_page_bytes(layer);
  }
  // The longest sequence whose full KV fits in this engine's KV memory
  // (EngineCore::max_sequence_tokens).
  int64_t max_sequence_tokens() const { return core_->max_sequence_tokens(); }
  // Whether this engine keeps a local prefix cache.
  bool prefix_caching() const { return core_->prefix_index() != nullptr; }
  // Tokens of the longest prefix of `tokens` (whole pages) in the local
  // prefix cache as of the last step; 0 without one. Thread-safe.
  int64_t LocalPrefixTokens(const std::vector<int32_t>& tokens) const;
  // Prefix-cache events after `after_seq`, or a snapshot when `snapshot`
  // is asked for or those events were dropped (bounded log). Thread-safe.
  PrefixCacheUpdate PrefixUpdates(uint64_t after_seq, bool snapshot) const;
  // The server's KV residency policy, or null when it serves a full cache.
  const ResidencyPolicy* residency_policy() const {
    return core_->residency_policy();
  }

 private:
  Engine() = default;
  void Loop();

  std::unique_ptr<EngineCore> core_;  // the engine thread's
  // Answers PrefixUpdates without a local prefix cache: never any event.
  std::unique_ptr<PrefixEventLog> no_prefix_log_;

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
  absl::Status fatal_;                // guarded by mu_ (core's, copied)
  bool stop_ = false;                 // guarded by mu_
  std::thread thread_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_ENGINE_H_
