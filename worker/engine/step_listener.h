// A hook on the engine's steps: a tensor-parallel group leader broadcasts
// each step to the other ranks before running it (worker/tp/), so that every
// rank runs the same forward pass on its shard.
#ifndef LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_
#define LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace latentkv::worker {

// One sequence's part of a step (views valid during OnStep only).
struct StepChunkInfo {
  const std::string* id = nullptr;
  int64_t start = 0;  // 0: the sequence's KV starts over (new or preempted)
  const int32_t* tokens = nullptr;  // [len]
  int32_t len = 0;
  int32_t prompt_len = 0;
  bool compressed = false;  // runs the server's residency plan
  bool logits = false;      // the leader samples from its last row
  bool all_logits = false;  // every row's logits (prompt logprobs)
};

// Called on the engine thread. Thread-safety: one caller.
class StepListener {
 public:
  virtual ~StepListener() = default;
  // Before the forward pass over `chunks`: the sequences in `released` were
  // finished, cancelled or preempted since the last call and their KV must be
  // freed first. Empty `chunks` and `released`: a keep-alive while idle (at
  // least every EngineOptions::keepalive_ms). A non-OK status fails every
  // request with UNAVAILABLE and the engine refuses new ones.
  virtual absl::Status OnStep(const std::vector<std::string>& released,
                              const std::vector<StepChunkInfo>& chunks) = 0;
  // The engine is stopping (after its last step).
  virtual void OnStop() = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_
