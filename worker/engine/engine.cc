#include "worker/engine/engine.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/chain_key.h"

namespace latentkv::worker {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::shared_ptr<const model::ModelWeights> weights,
    std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
    Communicator* comm) {
  auto core =
      EngineCore::Create(std::move(weights), std::move(backend), options, comm);
  if (!core.ok()) return core.status();
  std::unique_ptr<Engine> e(new Engine());
  e->core_ = std::move(*core);
  e->no_prefix_log_ =
      std::make_unique<PrefixEventLog>(e->core_->page_size(), 1);
  {
    std::lock_guard<std::mutex> lock(e->mu_);
    e->stats_ = e->core_->Stats();
  }
  e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

Engine::~Engine() { Stop(); }

absl::Status Engine::Submit(GenerationRequest req, EventSink sink) {
  auto seq = core_->Prepare(std::move(req));
  if (!seq.ok()) return seq.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("engine is stopping");
  if (!fatal_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("tensor-parallel group failed: ", fatal_.message()));
  }
  const int32_t max_waiting = core_->options().scheduler.max_waiting;
  if (queued_ >= max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request queue is full (", max_waiting, ")"));
  }
  ++queued_;
  inbox_.push_back({std::move(*seq), std::move(sink)});
  cv_.notify_one();
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(id);
  cv_.notify_one();
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) {
    thread_.join();
    if (StepListener* l = core_->options().step_listener; l != nullptr) {
      l->OnStop();
    }
  }
}

void Engine::Loop() {
  const EngineOptions& o = core_->options();
  while (true) {
    std::vector<Incoming> inbox;
    std::vector<std::string> cancels;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [&] {
        return stop_ || !inbox_.empty() || !cancels_.empty() || !core_->idle();
      };
      if (o.step_listener != nullptr) {
        // Wake up for keep-alives.
        cv_.wait_for(lock, std::chrono::milliseconds(o.keepalive_ms), ready);
      } else {
        cv_.wait(lock, ready);
      }
      if (stop_) break;
      inbox.swap(inbox_);
      cancels.swap(cancels_);
    }
    for (Incoming& in : inbox) {
      core_->Admit(std::move(in.seq), std::move(in.sink));
    }
    for (const std::string& id : cancels) core_->Cancel(id);
    core_->Step();
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = core_->Stats();
    stats_.waiting += static_cast<int32_t>(inbox_.size());
    queued_ = stats_.waiting;
    fatal_ = core_->fatal();
  }
  // Stopping: tell the group what it has not heard yet, then fail whatever
  // is left.
  core_->FlushGroupOps();
  std::vector<Incoming> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  GenerationEvent ev;
  ev.status = absl::UnavailableError("worker is shutting down");
  for (Incoming& in : inbox) in.sink(ev);
  core_->FailAll(ev.status);
}

int64_t Engine::LocalPrefixTokens(const std::vector<int32_t>& tokens) const {
  const PrefixIndex* index = core_->prefix_index();
  if (index == nullptr) return 0;
  return index->log().HeldTokens(
      kvstore::PrefixKeys(tokens, core_->page_size()));
}

PrefixCacheUpdate Engine::PrefixUpdates(uint64_t after_seq,
                                        bool snapshot) const {
  const PrefixIndex* index = core_->prefix_index();
  return (index != nullptr ? index->log() : *no_prefix_log_)
      .Updates(after_seq, snapshot);
}

}  // namespace latentkv::worker
