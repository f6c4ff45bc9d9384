#include "coordinator/worker_registry.h"

#include <algorithm>
#include <tuple>

namespace latentkv::coordinator {

bool WorkerRegistry::Register(const WorkerInfo& info, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerInfo w = info;
  w.last_seen = now;
  auto it = workers_.find(info.id);
  if (it != workers_.end()) {
    if (it->second.address != info.address) return false;
    w.inflight = it->second.inflight;
    w.inflight_tokens = it->second.inflight_tokens;
  }
  workers_[info.id] = w;
  return true;
}

bool WorkerRegistry::Heartbeat(const std::string& id, const WorkerLoad& load,
                               Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return false;
  it->second.load = load;
  it->second.last_seen = now;
  return true;
}

std::vector<std::string> WorkerRegistry::Expire(
    Clock::time_point now, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> gone;
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.last_seen > timeout) {
      gone.push_back(it->first);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

void WorkerRegistry::Remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.erase(id);
}

uint32_t WorkerRegistry::MaxContext() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t most = 0;
  for (const auto& [id, w] : workers_) {
    if (w.role != "prefill") most = std::max(most, w.max_context);
  }
  return most;
}

WorkerInfo* WorkerRegistry::Pick(const std::set<std::string>& exclude,
                                 const RouteHint& hint, bool prefill_role,
                                 int64_t holds) {
  auto tie = [](const WorkerInfo& w) {
    return std::make_tuple(w.inflight + int64_t{w.load.waiting},
                           w.load.kv_pages_in_use, w.id);
  };
  auto cost = [&](const WorkerInfo& w) {
    if (!routing_.kv_aware) return 0.0;
    int64_t cached = 0;
    if (hint.cached != nullptr) {
      if (auto it = hint.cached->find(w.id); it != hint.cached->end()) {
        cached = it->second;
      }
    }
    const int64_t prefill = std::max<int64_t>(0, hint.prompt_tokens - cached);
    return routing_.overlap_weight * static_cast<double>(prefill) +
           static_cast<double>(w.inflight_tokens);
  };
  WorkerInfo* best = nullptr;
  double best_cost = 0;
  for (auto& [id, w] : workers_) {
    if (exclude.count(id) || (w.role == "prefill") != prefill_role) continue;
    if (w.max_context > 0 && holds > w.max_context) continue;
    const double c = cost(w);
    if (best == nullptr || c < best_cost ||
        (c == best_cost && tie(w) < tie(*best))) {
      best = &w;
      best_cost = c;
    }
  }
  return best;
}

std::optional<WorkerInfo> WorkerRegistry::Acquire(
    const std::set<std::string>& exclude, const RouteHint& hint) {
  std::lock_guard<std::mutex> lock(mu_);
  // The worker holds the whole sequence.
  WorkerInfo* best = Pick(exclude, hint, false, hint.total_tokens);
  if (best == nullptr) {
    best = Pick(exclude, hint, true, hint.total_tokens);  // only prefill left
  }
  if (best == nullptr) return std::nullopt;
  ++best->inflight;
  best->inflight_tokens += hint.prompt_tokens;
  return *best;
}

std::optional<WorkerInfo> WorkerRegistry::AcquirePrefill(
    const std::set<std::string>& exclude, const RouteHint& hint) {
  std::lock_guard<std::mutex> lock(mu_);
  // A prefill worker holds the prompt only.
  WorkerInfo* best = Pick(exclude, hint, true, hint.prompt_tokens);
  if (best == nullptr) return std::nullopt;
  ++best->inflight;
  best->inflight_tokens += hint.prompt_tokens;
  return *best;
}

void WorkerRegistry::Release(const std::string& id, int64_t prompt_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  if (it->second.inflight > 0) --it->second.inflight;
  it->second.inflight_tokens =
      std::max<int64_t>(0, it->second.inflight_tokens - prompt_tokens);
}

std::vector<WorkerInfo> WorkerRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerInfo> out;
  for (const auto& [id, w] : workers_) out.push_back(w);
  return out;
}

size_t WorkerRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_.size();
}

}  // namespace latentkv::coordinator
