#include "worker/tp/in_process_group.h"

#include <stdlib.h>

#include <cstdio>
#include <string>
#include <utility>

#include "model/shard.h"
#include "worker/comm/gloo_communicator.h"

namespace latentkv::worker {
namespace {

template <typename T>
T OrDie(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "in-process group: %s: %s\n", what,
                 v.status().ToString().c_str());
    std::abort();
  }
  return std::move(*v);
}

}  // namespace

std::vector<std::unique_ptr<comm::Communicator>> JoinGlooGroup(
    int size, absl::Duration timeout) {
  std::string dir = "/tmp/latentkv-group-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) std::abort();
  std::vector<std::unique_ptr<comm::Communicator>> comms(size);
  std::vector<std::thread> joining;
  for (int r = 0; r < size; ++r) {
    joining.emplace_back([&, r] {
      comm::GlooOptions g;
      g.rank = r;
      g.size = size;
      g.rendezvous_dir = dir;
      g.prefix = "g";
      g.timeout = timeout;
      comms[r] = OrDie(comm::CreateGlooCommunicator(g), "rendezvous");
    });
  }
  for (auto& t : joining) t.join();
  return comms;
}

InProcessGroup::InProcessGroup(
    std::shared_ptr<const model::ModelWeights> weights, int size,
    const EngineOptions& options, const PerRank& per_rank)
    : size_(size) {
  auto rank_options = [&](int r) {
    EngineOptions o = options;
    if (per_rank) per_rank(r, &o);
    return o;
  };
  if (size == 1) {
    engine_ = OrDie(
        Engine::Create(weights, kernels::MakeCpuBackend(), rank_options(0)),
        "engine");
    return;
  }
  comms_ = JoinGlooGroup(size);
  followers_.resize(size);
  status_.resize(size);
  for (int r = 1; r < size; ++r) {
    auto shard =
        OrDie(model::ShardForTensorParallel(weights, r, size), "shard");
    followers_[r] = OrDie(TpFollower::Create(shard, kernels::MakeCpuBackend(),
                                             rank_options(r), comms_[r].get()),
                          "follower");
    threads_.emplace_back([this, r] { status_[r] = followers_[r]->Run(); });
  }
  leader_ = std::make_unique<TpLeader>(comms_[0].get());
  EngineOptions lo = rank_options(0);
  lo.step_listener = leader_.get();
  auto shard0 = OrDie(model::ShardForTensorParallel(weights, 0, size), "shard");
  engine_ = OrDie(
      Engine::Create(shard0, kernels::MakeCpuBackend(), lo, comms_[0].get()),
      "leader engine");
}

std::vector<absl::Status> InProcessGroup::Stop() {
  if (!stopped_) {
    stopped_ = true;
    engine_->Stop();  // broadcasts shutdown
    for (auto& t : threads_) t.join();
  }
  return status_;
}

InProcessGroup::~InProcessGroup() { Stop(); }

}  // namespace latentkv::worker
