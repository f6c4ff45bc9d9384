// Continuous-batching scheduler: decides, each step, which sequences run and
// how many of their tokens (decode tokens and chunks of prefill mixed in one
// batch), reserving their KV pages; preempts by recompute when KV runs out.
//
// Policy per step (token budget = max_step_tokens):
//  1. Running sequences, oldest first, each get min(pending, budget left,
//     KV room before the sequence's capacity) tokens. If their KV pages cannot
//     be reserved, the newest running sequence is preempted (pages released,
//     num_cached = 0, back to the head of the waiting queue) until the
//     reservation fits.
//  2. Waiting sequences, in queue order, are admitted while running <
//     max_running and budget remains and their pages can be reserved (no
//     preemption to admit; first come, first served: a sequence that does not
//     fit blocks the ones behind it).
// Before a reservation gives up (preempting or not admitting), the reclaimer
// (if set: the local prefix cache's eviction) is asked to free pages, as
// long as it frees something.
// Control-plane only: no kernels, no gRPC; unit-testable with a KvCache.
// Thread-safety: not thread-safe; owned by the engine thread.
#ifndef LATENTKV_WORKER_ENGINE_SCHEDULER_H_
#define LATENTKV_WORKER_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/engine/sequence.h"

namespace latentkv::worker {

struct SchedulerOptions {
  int32_t max_running = 64;       // sequences in one step; > 0
  int32_t max_step_tokens = 512;  // tokens (prefill + decode) per step; > 0
  int32_t max_waiting = 1024;     // queue bound; beyond: ResourceExhausted
};

// One sequence's share of a step: tokens[start, start + len) go through the
// model; when `sample`, the logits of the last one give the next token.
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t start = 0;
  int32_t len = 0;
  bool sample = false;
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, KvCache* cache);
  ~Scheduler();

  // Queues a sequence. ResourceExhausted when the queue is full, or when the
  // sequence could never fit in the whole KV cache (prompt + max new tokens).
  absl::Status Enqueue(std::unique_ptr<Sequence> seq);
  // Plans the next step (empty when idle). Chunk pointers stay valid until
  // the next Schedule() or Remove() of that sequence.
  std::vector<ScheduledChunk> Schedule();
  // Removes a sequence (finished or cancelled), releasing its pages. Returns
  // nullptr when unknown.
  std::unique_ptr<Sequence> Remove(const std::string& id);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t preemptions() const { return preemptions_; }
  // Ids of the sequences preempted since the last call.
  std::vector<std::string> TakePreempted() {
    std::vector<std::string> out;
    out.swap(preempted_);
    return out;
  }
  bool idle() const { return running_.empty() && waiting_.empty(); }
  // Frees some KV pages on demand; returns false when it could free none.
  void set_reclaimer(std::function<bool()> reclaim) {
    reclaim_ = std::move(reclaim);
  }
  // Called on a waiting sequence about to be admitted with nothing cached
  // (new, or preempted): it may attach already computed KV (a cached prefix)
  // and advance num_cached.
  void set_admit_hook(std::function<void(Sequence*)> hook) {
    admit_hook_ = std::move(hook);
  }

 private:
  void Preempt(Sequence* seq);
  // Reserve() with reclaiming: true when n more tokens fit.
  bool Reserve(Sequence* seq, int64_t n);

  SchedulerOptions options_;
  KvCache* cache_;
  std::vector<std::unique_ptr<Sequence>> running_;  // oldest first
  std::deque<std::unique_ptr<Sequence>> waiting_;
  int64_t preemptions_ = 0;
  std::vector<std::string> preempted_;
  int64_t total_pages_ = 0;
  std::function<bool()> reclaim_;
  std::function<void(Sequence*)> admit_hook_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_SCHEDULER_H_
