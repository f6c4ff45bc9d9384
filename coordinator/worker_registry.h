// The coordinator's view of its workers: registration, heartbeats, expiry and
// the choice of a worker for a request (least loaded).
//
// Load of a worker = requests the coordinator has in flight on it (known at
// once) + the waiting requests its last heartbeat reported. Pick() returns
// the live worker with the lowest load (ties: fewest KV pages in use, then
// id), skipping excluded ids. Prefill/decode disaggregation: a request goes
// to a mixed or decode worker; a decode worker also gets a prefill worker
// (AcquirePrefill) to take the prompt's KV from.
// Control-plane only: no gRPC. Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COORDINATOR_WORKER_REGISTRY_H_
#define LATENTKV_COORDINATOR_WORKER_REGISTRY_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace latentkv::coordinator {

using Clock = std::chrono::steady_clock;

struct WorkerLoad {
  uint32_t running = 0;
  uint32_t waiting = 0;
  uint64_t kv_pages_in_use = 0;
  uint64_t kv_pages_total = 0;
};

struct WorkerInfo {
  std::string id;
  std::string address;
  // "mixed" (prefill + decode), "prefill" (runs prompts for decode workers)
  // or "decode" (takes prompts' KV from a prefill worker).
  std::string role = "mixed";
  uint32_t max_context = 0;
  WorkerLoad load;
  int64_t inflight = 0;  // requests this coordinator has routed there
  Clock::time_point last_seen;
};

class WorkerRegistry {
 public:
  // Adds or replaces a worker (a restarted worker re-registers).
  void Register(const WorkerInfo& info, Clock::time_point now);
  // Updates load and liveness; false when the id is unknown.
  bool Heartbeat(const std::string& id, const WorkerLoad& load,
                 Clock::time_point now);
  // Removes workers not seen for `timeout`; returns their ids.
  std::vector<std::string> Expire(Clock::time_point now,
                                  std::chrono::milliseconds timeout);
  void Remove(const std::string& id);
  // Chooses a worker for a request (mixed or decode; prefill workers only
  // when no other is live) and counts one more request in flight on it.
  std::optional<WorkerInfo> Acquire(const std::set<std::string>& exclude);
  // The least-loaded live prefill worker, counting one more request in
  // flight on it (Release it after), or nullopt when there is none.
  std::optional<WorkerInfo> AcquirePrefill(
      const std::set<std::string>& exclude);
  // Ends a request started by Acquire (no-op if the worker is gone).
  void Release(const std::string& id);
  std::vector<WorkerInfo> List() const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, WorkerInfo> workers_;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_WORKER_REGISTRY_H_
