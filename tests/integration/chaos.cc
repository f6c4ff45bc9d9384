// Test support for the chaos tests (chaos.h).
#include "tests/integration/chaos.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace latentkv::testing {

namespace pb = ::latentkv::v1;

std::vector<std::string> ChaosPrompts() {
  return {"Once upon a time", "The little dog",  "Tom and Lily went",
          "One day, a bird",  "The sun was",     "Mom said",
          "There was a big",  "A cat named Tim", "The boy wanted",
          "In the park",      "She liked to",    "The car was red"};
}

pb::GenerateRequest ChaosRequest(const std::string& prompt) {
  pb::GenerateRequest req = Greedy(prompt, 160);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

std::vector<std::vector<int32_t>> SoloRuns(
    pb::Generation::Stub& stub, const std::vector<std::string>& prompts) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& p : prompts) {
    StreamResult r = Generate(stub, ChaosRequest(p));
    EXPECT_TRUE(r.status.ok()) << p << ": " << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 160u) << p;
    if (!r.status.ok()) break;
    out.push_back(std::move(r.tokens));
  }
  return out;
}

std::vector<StreamResult> RunWithChaos(pb::Generation::Stub& stub,
                                       const std::vector<std::string>& prompts,
                                       int64_t after_tokens,
                                       const std::function<void()>& chaos,
                                       double timeout_s) {
  std::vector<StreamResult> out(prompts.size());
  std::atomic<int64_t> progress{0};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      out[i] = Generate(stub, ChaosRequest(prompts[i]), timeout_s, &progress);
      done.fetch_add(1);
    });
  }
  while (progress.load() < after_tokens &&
         done.load() < static_cast<int>(prompts.size())) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_LT(done.load(), static_cast<int>(prompts.size()))
      << "every stream ended before the chaos began";
  chaos();
  for (auto& t : threads) t.join();
  return out;
}

bool WaitForWorkers(pb::Generation::Stub& stub, int workers, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(2));
    pb::ListModelsResponse resp;
    if (stub.ListModels(&ctx, {}, &resp).ok() && resp.models_size() > 0 &&
        resp.models(0).num_workers() == static_cast<uint32_t>(workers)) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

pid_t ChildWithArg(pid_t pid, const std::string& needle) {
  for (const ChildProcess& c : ChildrenOf(pid)) {
    for (const std::string& a : c.args) {
      if (a.find(needle) != std::string::npos) return c.pid;
    }
  }
  return -1;
}

}  // namespace latentkv::testing
