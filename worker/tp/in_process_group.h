// Test and benchmark support: a tensor-parallel group in one process, its
// ranks as threads with real Gloo communicators on loopback (a fresh
// rendezvous directory each), rank 0 an Engine with a TpLeader, the others
// TpFollowers running until the engine stops. A group of one is a plain
// Engine. Not for serving (latentkv-worker forms groups of processes).
#ifndef LATENTKV_WORKER_TP_IN_PROCESS_GROUP_H_
#define LATENTKV_WORKER_TP_IN_PROCESS_GROUP_H_

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine.h"
#include "worker/tp/tensor_parallel.h"

namespace latentkv::worker {

// `size` Gloo communicators of one group, rank r at index r, joined from
// threads through a fresh rendezvous directory. Aborts (with the status on
// stderr) when the group cannot form.
std::vector<std::unique_ptr<comm::Communicator>> JoinGlooGroup(
    int size, absl::Duration timeout = absl::Seconds(60));

class InProcessGroup {
 public:
  // Aborts (with the status on stderr) when the group cannot form.
  // `per_rank` (optional) adjusts rank r's copy of `options` (e.g. its own
  // kv_store or kv_puller).
  using PerRank = std::function<void(int rank, EngineOptions* options)>;
  InProcessGroup(std::shared_ptr<const model::ModelWeights> weights, int size,
                 const EngineOptions& options, const PerRank& per_rank = {});
  // Stops the engine (broadcasting shutdown) and joins the followers.
  ~InProcessGroup();
  Engine& engine() { return *engine_; }
  int size() const { return size_; }
  // The followers' Run() results (OK for each after a clean stop); valid
  // after the destructor has started, so tests read them via Stop().
  std::vector<absl::Status> Stop();

 private:
  int size_;
  std::vector<std::unique_ptr<comm::Communicator>> comms_;
  std::vector<std::unique_ptr<TpFollower>> followers_;
  std::vector<absl::Status> status_;
  std::vector<std::thread> threads_;
  std::unique_ptr<TpLeader> leader_;
  std::unique_ptr<Engine> engine_;
  bool stopped_ = false;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_TP_IN_PROCESS_GROUP_H_
