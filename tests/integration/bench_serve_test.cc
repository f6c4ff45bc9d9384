// `latentkv bench serve` as a user runs it, against a real local cluster
// (coordinator + worker processes, stories260K): a seeded two-rate sweep over
// real text completes every request with exactly the asked output length,
// the JSON's totals and percentiles are consistent, the plot script draws a
// PNG, and a compare run with the same seed sends the same workload to each
// target.
#include <fstream>
#include <map>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

using nlohmann::json;

const std::string kText =
    std::string(LATENTKV_SHARED_DIR) + "/text/tinystories_train_excerpt.txt";

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// min <= median <= p90 <= p99 <= max, and a count.
void ExpectOrdered(const json& d, const std::string& what) {
  ASSERT_GT(d["count"].get<int64_t>(), 0) << what;
  const double min = d["min"], med = d["median"], p90 = d["p90"],
               p99 = d["p99"], max = d["max"], mean = d["mean"];
  EXPECT_LE(min, med) << what;
  EXPECT_LE(med, p90) << what;
  EXPECT_LE(p90, p99) << what;
  EXPECT_LE(p99, max) << what;
  EXPECT_LE(min, mean) << what;
  EXPECT_LE(mean, max) << what;
  EXPECT_GE(min, 0.0) << what;
}

class BenchServeTest : public SharedClusterTest {};

constexpr int kRequests = 16;

TEST_F(BenchServeTest, SeededSweepCompletesWithTheAskedLengths) {
  const std::string dir = MakeTempDir();
  int code = 0;
  const std::string out = RunCommand(
      {BinDir() + "/latentkv", "bench", "serve",
       "--server=" + cluster_->address(), "--num-requests=16",
       "--concurrency=6", "--sweep-rates=40,inf", "--dataset=" + kText,
       "--input-len=24", "--input-len-range=0.5", "--output-len=12",
       "--output-len-range=0.5", "--seed=7", "--goodput=ttft:60000",
       "--output=" + dir + "/r.json", "--plot"},
      &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("Serving Benchmark Result"), std::string::npos) << out;
  EXPECT_NE(out.find("rate=40"), std::string::npos) << out;
  EXPECT_NE(out.find("P99 TPOT (ms):"), std::string::npos) << out;
  const json r = ReadJson(dir + "/r.json");
  EXPECT_EQ(r["config"]["seed"], 7);
  ASSERT_EQ(r["phases"].size(), 2u);
  EXPECT_EQ(r["phases"][0]["request_rate"], 40.0);
  EXPECT_TRUE(r["phases"][1]["request_rate"].is_null());  // inf
  std::vector<std::pair<int, int>> lengths;  // (prompt, output) per index
  for (const json& phase : r["phases"]) {
    const json& s = phase["summary"];
    EXPECT_EQ(s["completed"], kRequests);
    EXPECT_EQ(s["failed"], 0);
    EXPECT_TRUE(s["errors"].empty());
    ASSERT_EQ(phase["requests"].size(), static_cast<size_t>(kRequests));
    int64_t in = 0, out_tokens = 0, itl = 0;
    for (const json& q : phase["requests"]) {
      EXPECT_EQ(q["status"], "OK") << q["error"];
      const int prompt = q["prompt_tokens"], asked = q["max_tokens"];
      EXPECT_GE(prompt, 12);
      EXPECT_LE(prompt, 36);
      EXPECT_GE(asked, 6);
      EXPECT_LE(asked, 18);
      // ignore_eos: exactly what was asked, and the server agrees.
      EXPECT_EQ(q["output_tokens"], asked);
      EXPECT_EQ(q["usage_completion_tokens"], asked);
      EXPECT_EQ(q["usage_prompt_tokens"], prompt);
      EXPECT_EQ(q["finish_reason"], "FINISH_REASON_LENGTH");
      EXPECT_EQ(q["itl_ms"].size(), static_cast<size_t>(asked - 1));
      EXPECT_LE(q["ttft_ms"].get<double>(), q["e2e_ms"].get<double>());
      in += prompt;
      out_tokens += asked;
      itl += asked - 1;
      if (&phase == &r["phases"][0]) {
        lengths.push_back({prompt, asked});
      } else {
        // Same seed, same workload in every phase.
        const int i = q["index"];
        EXPECT_EQ(lengths[i], std::make_pair(prompt, asked)) << i;
      }
    }
    EXPECT_EQ(s["input_tokens"], in);
    EXPECT_EQ(s["output_tokens"], out_tokens);
    EXPECT_EQ(s["itl_ms"]["count"], itl);
    const double d = s["duration_s"];
    EXPECT_GT(d, 0.0);
    EXPECT_NEAR(s["request_throughput"].get<double>(), kRequests / d, 1e-6);
    EXPECT_NEAR(s["output_throughput"].get<double>(), out_tokens / d, 1e-6);
    EXPECT_NEAR(s["total_throughput"].get<double>(), (in + out_tokens) / d,
                1e-6);
    EXPECT_EQ(s["good_requests"], kRequests);  // a one-minute TTFT bound
    for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
      ExpectOrdered(s[m], m);
    }
    EXPECT_LE(s["ttft_ms"]["median"].get<double>(),
              s["e2e_ms"]["median"].get<double>());
  }
  // Arrivals at 40 req/s are spread out; at inf they all come at t = 0.
  EXPECT_GT(
      r["phases"][0]["requests"][kRequests - 1]["scheduled_s"].get<double>(),
      0.0);
  EXPECT_EQ(r["phases"][1]["requests"][kRequests - 1]["scheduled_s"], 0.0);
  // The plot.
  std::ifstream png(dir + "/r.png", std::ios::binary);
  ASSERT_TRUE(png) << "no PNG written";
  char magic[8] = {};
  png.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");

  // Compare mode: the same seed against two targets (here the same cluster,
  // full cache and server default) sends the same requests to each.
  const std::string cmp = RunCommand(
      {BinDir() + "/latentkv", "bench", "serve",
       "--compare=full=" + cluster_->address() + ",kv_cache_mode=full",
       "--compare", "dflt=" + cluster_->address(), "--num-requests=16",
       "--concurrency=6", "--request-rate=40", "--dataset=" + kText,
       "--input-len=24", "--input-len-range=0.5", "--output-len=12",
       "--output-len-range=0.5", "--seed=7", "--progress=false",
       "--output=" + dir + "/c.json"},
      &code);
  ASSERT_EQ(code, 0) << cmp;
  EXPECT_NE(cmp.find("full"), std::string::npos) << cmp;
  EXPECT_NE(cmp.find("dflt"), std::string::npos) << cmp;
  const json c = ReadJson(dir + "/c.json");
  ASSERT_EQ(c["phases"].size(), 2u);
  EXPECT_EQ(c["phases"][0]["kv_cache_mode"], "full");
  EXPECT_EQ(c["phases"][1]["kv_cache_mode"], "default");
  for (const json& phase : c["phases"]) {
    EXPECT_EQ(phase["summary"]["completed"], kRequests);
    for (const json& q : phase["requests"]) {
      const int i = q["index"];
      EXPECT_EQ(lengths[i], std::make_pair(q["prompt_tokens"].get<int>(),
                                           q["max_tokens"].get<int>()));
      // Same seed and rate: the same arrival schedule as the sweep's phase.
      EXPECT_EQ(q["scheduled_s"], r["phases"][0]["requests"][i]["scheduled_s"]);
    }
  }
}

TEST_F(BenchServeTest, BadFlagsAreRefused) {
  int code = 0;
  RunCommand({BinDir() + "/latentkv", "bench", "serve",
              "--server=" + cluster_->address(), "--sweep-rates=1,0"},
             &code, true);
  EXPECT_EQ(code, 2);
  RunCommand({BinDir() + "/latentkv", "bench", "serve",
              "--compare=a=" + cluster_->address()},
             &code, true);
  EXPECT_EQ(code, 2);
  // Longer than the model's context (512).
  const std::string out =
      RunCommand({BinDir() + "/latentkv", "bench", "serve",
                  "--server=" + cluster_->address(), "--input-len=400",
                  "--output-len=200", "--num-requests=1"},
                 &code, true);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("exceeds the model's context"), std::string::npos) << out;
}

}  // namespace
}  // namespace latentkv::testing
