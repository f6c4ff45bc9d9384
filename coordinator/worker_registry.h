// The coordinator's view of its workers: registration, heartbeats, expiry and
// the choice of a worker for a request.
//
// KV-aware routing (the default, like Dynamo's and llm-d's routers): each
// candidate worker w costs
//   overlap_weight * (prompt_tokens - cached(w)) + active_tokens(w)
// where cached(w) is the prompt's prefix w holds in its local prefix cache
// (coordinator/kv_index.h) -- the prefill work w would skip -- and
// active_tokens(w) the prompt tokens of the requests this coordinator has in
// flight on w (the KV they hold and the prefill queued there). The cheapest
// wins; ties go to fewer requests in flight + waiting, then fewer KV pages in
// use, then the id. Load routing (kv_aware = false) picks the fewest requests
// in flight + waiting (heartbeat), then KV pages, then id. Prefill/decode
// disaggregation: a request goes to a mixed or decode worker; a decode worker
// also gets a prefill worker (AcquirePrefill) to take the prompt's KV from.
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

struct RoutingOptions {
  bool kv_aware = true;         // false: load only
  double overlap_weight = 1.0;  // >= 0; 0 ignores cached prefixes
};

// What the router knows of one request.
struct RouteHint {
  int64_t prompt_tokens = 0;
  // Cached prompt tokens per worker id (absent: none); may be null.
  const std::map<std::string, int64_t>* cached = nullptr;
  // Prompt plus most new tokens: workers whose max_context (the longest
  // sequence their KV memory holds) is smaller are never chosen. 0: any.
  int64_t total_tokens = 0;
};

struct WorkerInfo {
  std::string id;
  std::string address;
  // "mixed" (prefill + decode), "prefill" (runs prompts for decode workers)
  // or "decode" (takes prompts' KV from a prefill worker).
  std::string role = "mixed";
  // The longest sequence (prompt + generated) its KV memory holds, capped
  // at the model's context; 0: unknown (no bound).
  uint32_t max_context = 0;
  WorkerLoad load;
  int64_t inflight = 0;         // requests this coordinator has routed there
  int64_t inflight_tokens = 0;  // their prompt tokens
  Clock::time_point last_seen;
};

class WorkerRegistry {
 public:
  explicit WorkerRegistry(RoutingOptions routing = {}) : routing_(routing) {}
  // Adds a worker, or refreshes one that re-registers at the same address
  // (a restarted process). False, changing nothing, when the id is live at
  // another address: an id is never taken over (a new address may take it
  // once the old entry has expired).
  bool Register(const WorkerInfo& info, Clock::time_point now);
  // Updates load and liveness; false when the id is unknown.
  bool Heartbeat(const std::string& id, const WorkerLoad& load,
                 Clock::time_point now);
  // Removes workers not seen for `timeout`; returns their ids.
  std::vector<std::string> Expire(Clock::time_point now,
                                  std::chrono::milliseconds timeout);
  void Remove(const std::string& id);
  // Chooses a worker for a request (mixed or decode; prefill workers only
  // when no other is live) and counts the request in flight on it (with
  // hint.prompt_tokens active tokens).
  std::optional<WorkerInfo> Acquire(const std::set<std::string>& exclude,
                                    const RouteHint& hint = {});
  // The cheapest live prefill worker, counted like Acquire (Release it
  // after), or nullopt when there is none.
  std::optional<WorkerInfo> AcquirePrefill(const std::set<std::string>& exclude,
                                           const RouteHint& hint = {});
  // Ends a request started by Acquire with the same prompt_tokens (no-op if
  // the worker is gone).
  void Release(const std::string& id, int64_t prompt_tokens = 0);
  std::vector<WorkerInfo> List() const;
  // The longest sequence a live mixed or decode worker holds (the largest
  // max_context among them), or 0 when there is none.
  uint32_t MaxContext() const;
  size_t size() const;

 private:
  // The cheapest worker whose role matches and whose max_context holds
  // `holds` tokens, or null.
  WorkerInfo* Pick(const std::set<std::string>& exclude, const RouteHint& hint,
                   bool prefill_role, int64_t holds);

  RoutingOptions routing_;
  mutable std::mutex mu_;
  std::map<std::string, WorkerInfo> workers_;
};

// Counts a request in flight on a worker (Acquire's) for as long as it
// lives: Releases it on destruction.
class InflightGuard {
 public:
  InflightGuard(WorkerRegistry* r, std::string id, int64_t tokens)
      : r_(r), id_(std::move(id)), tokens_(tokens) {}
  ~InflightGuard() { r_->Release(id_, tokens_); }
  InflightGuard(const InflightGuard&) = delete;
  InflightGuard& operator=(const InflightGuard&) = delete;

 private:
  WorkerRegistry* r_;
  std::string id_;
  int64_t tokens_;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_WORKER_REGISTRY_H_
