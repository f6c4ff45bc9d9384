#include "coordinator/worker_registry.h"

#include <tuple>

namespace latentkv::coordinator {

void WorkerRegistry::Register(const WorkerInfo& info, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerInfo w = info;
  w.last_seen = now;
  auto it = workers_.find(info.id);
  if (it != workers_.end()) w.inflight = it->second.inflight;
  workers_[info.id] = w;
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

std::optional<WorkerInfo> WorkerRegistry::Acquire(
    const std::set<std::string>& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = [](const WorkerInfo& w) {
    return std::make_tuple(w.inflight + int64_t{w.load.waiting},
                           w.load.kv_pages_in_use, w.id);
  };
  auto pick = [&](bool prefill_role) -> WorkerInfo* {
    WorkerInfo* best = nullptr;
    for (auto& [id, w] : workers_) {
      if (exclude.count(id) || (w.role == "prefill") != prefill_role) continue;
      if (best == nullptr || key(w) < key(*best)) best = &w;
    }
    return best;
  };
  WorkerInfo* best = pick(false);
  if (best == nullptr) best = pick(true);  // only prefill workers are left
  if (best == nullptr) return std::nullopt;
  ++best->inflight;
  return *best;
}

std::optional<WorkerInfo> WorkerRegistry::AcquirePrefill(
    const std::set<std::string>& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerInfo* best = nullptr;
  for (auto& [id, w] : workers_) {
    if (w.role != "prefill" || exclude.count(id)) continue;
    if (best == nullptr ||
        std::make_tuple(w.inflight, w.load.kv_pages_in_use, w.id) <
            std::make_tuple(best->inflight, best->load.kv_pages_in_use,
                            best->id)) {
      best = &w;
    }
  }
  if (best == nullptr) return std::nullopt;
  ++best->inflight;
  return *best;
}

void WorkerRegistry::Release(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  if (it != workers_.end() && it->second.inflight > 0) --it->second.inflight;
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
