// The workload of the serving benchmark: which prompts (as token ids), how
// many output tokens each asks for, and when each request arrives. Plain
// C++ (tokenization is injected), deterministic for a given seed: the same
// options and prompt source give the same requests and arrival times on
// every run.
#ifndef LATENTKV_TOOLS_BENCH_WORKLOAD_H_
#define LATENTKV_TOOLS_BENCH_WORKLOAD_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/bench/stats.h"

namespace latentkv::bench {

// Arrival times of a renewal process: inter-arrival gaps are
// gamma-distributed with shape `burstiness` and mean 1/rate (as vLLM's
// `--burstiness`): burstiness 1 is a Poisson process, < 1 burstier, > 1 more
// regular. rate = inf: every arrival at t = 0 (all at once).
class ArrivalProcess {
 public:
  // rate > 0 (req/s, may be inf); burstiness > 0.
  ArrivalProcess(double rate, double burstiness, uint64_t seed);
  // The next arrival time, seconds since the start (non-decreasing).
  double Next();

 private:
  double rate_;
  double t_ = 0;
  std::mt19937_64 rng_;
  std::gamma_distribution<double> gap_;
};

struct WorkloadOptions {
  // Prompt length in tokens, BOS included (>= 2). With input_len_range r,
  // each prompt's length is uniform in [len * (1 - r), len * (1 + r)]
  // (rounded, at least 2); r in [0, 1).
  int32_t input_len = 128;
  double input_len_range = 0;
  // Output tokens asked of each request (max_tokens; the benchmark sets
  // ignore_eos so this is what comes back), with the same kind of range.
  int32_t output_len = 128;
  double output_len_range = 0;
  // Poisson/gamma arrivals (see ArrivalProcess); inf: all at once.
  double request_rate = kInf;
  double burstiness = 1.0;
  // Shared prefixes (like vLLM's prefix-repetition dataset: system prompts,
  // conversation histories): with prefix_groups G > 0, the workload has G
  // distinct prefixes of prefix_len tokens (BOS first), fixed by the seed,
  // and each request is one of them, picked uniformly by the seeded RNG,
  // followed by its own suffix of input_len tokens (no BOS; input_len and
  // its range then count the suffix only, >= 1). The groups' prefixes differ
  // within their first kPrefixDistinctTokens tokens (the first KV page at the
  // default page size), so no two groups share a cached block. 0: off.
  int32_t prefix_groups = 0;
  int32_t prefix_len = 0;  // >= 2 when prefix_groups > 0
  // Seeds prompt choice, lengths, prefixes and arrival times.
  uint64_t seed = 0;
};

// Tokens at the start of every group prefix within which two groups differ
// (or the whole prefix, if shorter).
inline constexpr int32_t kPrefixDistinctTokens = 16;

// Checks the ranges, and that the longest request fits `max_context`
// tokens (prompt + output); InvalidArgument otherwise.
absl::Status ValidateWorkload(const WorkloadOptions& o, int64_t max_context);

// Where prompt tokens come from. With a non-empty `pool` (real text as one
// token stream, see BuildPromptSource) a prompt is BOS followed by
// input_len - 1 consecutive pool tokens from a random passage start
// (wrapping at the end); otherwise BOS followed by uniform random ids in
// [first_synthetic_id, vocab_size).
struct PromptSource {
  int32_t bos_id = 1;
  int32_t vocab_size = 0;
  int32_t first_synthetic_id = 3;  // skips llama2.c's <unk>, <s>, </s>
  std::vector<int32_t> pool;       // token stream of real text
  std::vector<int64_t> starts;     // passage starts in `pool`
};

// Tokenizes text without BOS.
using TokenizeFn =
    std::function<absl::StatusOr<std::vector<int32_t>>(const std::string&)>;

// The non-empty lines of a text file, each a passage.
absl::StatusOr<std::vector<std::string>> ReadPassages(const std::string& path);

// Tokenizes passages in order into one stream until it holds at least
// `min_tokens` tokens or the passages run out.
absl::StatusOr<PromptSource> BuildPromptSource(
    const std::vector<std::string>& passages, const TokenizeFn& tokenize,
    int64_t min_tokens, int32_t bos_id, int32_t vocab_size);

// One request of the workload.
struct RequestSpec {
  int64_t index = 0;
  std::vector<int32_t> prompt_token_ids;  // BOS first
  int32_t output_len = 0;
  double arrival_s = 0;  // since the phase start
};

// The requests in order. Request i's prompt and lengths depend only on
// (seed, i) (and the group prefixes, which depend only on the seed);
// arrival times on (seed, rate, burstiness) and i.
class Workload {
 public:
  Workload(const WorkloadOptions& options, const PromptSource* source);
  RequestSpec Next();

  // The group prefixes (empty when prefix_groups is 0).
  const std::vector<std::vector<int32_t>>& prefixes() const {
    return prefixes_;
  }

 private:
  WorkloadOptions options_;
  const PromptSource* source_;  // not owned
  ArrivalProcess arrivals_;
  std::vector<std::vector<int32_t>> prefixes_;  // [prefix_groups][prefix_len]
  int64_t next_ = 0;
};

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_WORKLOAD_H_
