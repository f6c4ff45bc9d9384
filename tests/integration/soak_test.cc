// A soak: rounds of mixed traffic (greedy and sampled gRPC streams, streams
// cut by short client deadlines, Tokenize, and near-limit HTTP bodies that
// are refused) against one cluster. After warm-up, the coordinator's and
// the worker's resident memory stay within a fixed margin however many
// rounds run, and every greedy answer stays what it was in the first round.
// (Before common/heap_bounds.h the coordinator grew 53 -> 82 MB in 8 rounds,
// and on to 100 MB.)
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "tests/integration/chaos.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

// VmRSS of `pid` in KiB (0 if unreadable).
int64_t RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::istringstream(line.substr(6)) >> kib;
      return kib;
    }
  }
  return 0;
}

struct Soak {
  Cluster& c;
  std::string big_body;  // a 1.9 MB completions body, refused (prompt bytes)
  std::map<int, std::vector<int32_t>> greedy;  // request index -> tokens
  std::atomic<int> failures{0};

  pb::GenerateRequest Request(int i) {
    const std::vector<std::string> prompts = ChaosPrompts();
    std::string prompt = prompts[i % prompts.size()];
    for (int k = 0; k < i % 5; ++k) prompt += " and then they played";
    pb::GenerateRequest r = Greedy(prompt, 20 + (i * 37) % 100);
    if (i % 2 == 1) {
      r.mutable_sampling()->set_temperature(0.8f);
      r.mutable_sampling()->set_seed(i);
    }
    return r;
  }

  // One round: 48 requests from 12 threads, plus 4 refused HTTP bodies.
  void Round(bool first) {
    std::vector<std::thread> threads;
    std::mutex mu;
    for (int t = 0; t < 12; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < 48; i += 12) {
          if (i % 12 == 5) {
            grpc::ClientContext ctx;
            pb::TokenizeRequest req;
            req.set_text("Once upon a time " + std::to_string(i));
            pb::TokenizeResponse resp;
            if (!c.stub().Tokenize(&ctx, req, &resp).ok()) failures++;
            continue;
          }
          const bool cut = i % 6 == 3;  // a 30 ms deadline: cancelled
          StreamResult r = Generate(c.stub(), Request(i), cut ? 0.03 : 60);
          if (cut) {
            if (!r.status.ok() &&
                r.status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
              failures++;
            }
            continue;
          }
          if (!r.status.ok()) {
            failures++;
            continue;
          }
          if (i % 2 == 0) {
            std::lock_guard<std::mutex> lock(mu);
            if (first) {
              greedy[i] = r.tokens;
            } else if (greedy[i] != r.tokens) {
              failures++;
            }
          }
        }
      });
    }
    for (int k = 0; k < 4; ++k) {
      int code = -1;
      const std::string out = RunCommand(
          {"curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w",
           "%{http_code}", "-H", "Content-Type: application/json",
           "--data-binary", "@" + big_body,
           "http://127.0.0.1:" + std::to_string(c.http_port()) +
               "/v1/completions"},
          &code);
      if (out != "400") failures++;
    }
    for (auto& th : threads) th.join();
  }
};

TEST(SoakTest, MemoryStaysBoundedAndAnswersStayTheSame) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  Cluster c(o);
  Soak soak{c};
  soak.big_body = MakeTempDir() + "/big.json";
  {
    std::ofstream out(soak.big_body);
    out << "{\"model\": \"stories260K\", \"max_tokens\": 4, \"prompt\": \"";
    for (int i = 0; i < 1900000 / 20; ++i) out << "the cat sat on a mat ";
    out << "\"}";
  }
  soak.Round(/*first=*/true);
  soak.Round(false);
  const int64_t coord0 = RssKib(c.coordinator().pid());
  const int64_t worker0 = RssKib(c.worker(0).pid());
  ASSERT_GT(coord0, 0);
  ASSERT_GT(worker0, 0);
  // LATENTKV_SOAK_ROUNDS=N soaks longer (8 rounds take ~15 s here), with
  // LATENTKV_SOAK_TRACE=1 printing the memory after every round.
  const char* rounds_env = std::getenv("LATENTKV_SOAK_ROUNDS");
  const int kRounds = rounds_env != nullptr ? std::atoi(rounds_env) : 8;
  const bool trace = std::getenv("LATENTKV_SOAK_TRACE") != nullptr;
  for (int r = 0; r < kRounds; ++r) {
    soak.Round(false);
    if (trace) {
      std::printf("round %d: coordinator %lld KiB, worker %lld KiB\n", r,
                  static_cast<long long>(RssKib(c.coordinator().pid())),
                  static_cast<long long>(RssKib(c.worker(0).pid())));
    }
  }
  const int64_t coord1 = RssKib(c.coordinator().pid());
  const int64_t worker1 = RssKib(c.worker(0).pid());
  std::printf(
      "soak: %d rounds of 48 requests + 4 refused 1.9 MB bodies: "
      "coordinator RSS %lld -> %lld KiB, worker %lld -> %lld KiB\n",
      kRounds, static_cast<long long>(coord0), static_cast<long long>(coord1),
      static_cast<long long>(worker0), static_cast<long long>(worker1));
  EXPECT_EQ(soak.failures.load(), 0) << c.Logs();
  EXPECT_LT(coord1 - coord0, 16 * 1024);
  EXPECT_LT(worker1 - worker0, 16 * 1024);
}

}  // namespace
}  // namespace latentkv::testing
