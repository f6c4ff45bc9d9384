#include "tools/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace latentkv::bench {
namespace {

// SplitMix64: decorrelates the per-request seeds derived from (seed, i).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::pair<int32_t, int32_t> Bounds(int32_t len, double range, int32_t floor) {
  const int32_t lo = std::max<int32_t>(
      floor, static_cast<int32_t>(std::lround(len * (1.0 - range))));
  const int32_t hi = std::max<int32_t>(
      lo, static_cast<int32_t>(std::lround(len * (1.0 + range))));
  return {lo, hi};
}

}  // namespace

ArrivalProcess::ArrivalProcess(double rate, double burstiness, uint64_t seed)
    : rate_(rate),
      rng_(Mix(seed ^ 0xa5a5a5a5ULL)),
      gap_(burstiness, std::isinf(rate) ? 1.0 : 1.0 / (rate * burstiness)) {}

double ArrivalProcess::Next() {
  if (std::isinf(rate_)) return 0.0;
  const double t = t_;
  t_ += gap_(rng_);
  return t;
}

absl::Status ValidateWorkload(const WorkloadOptions& o, int64_t max_context) {
  if (o.input_len < 2) {
    return absl::InvalidArgumentError("input_len must be >= 2 (BOS + text)");
  }
  if (o.output_len < 1) {
    return absl::InvalidArgumentError("output_len must be >= 1");
  }
  if (!(o.input_len_range >= 0 && o.input_len_range < 1) ||
      !(o.output_len_range >= 0 && o.output_len_range < 1)) {
    return absl::InvalidArgumentError("length ranges must be in [0, 1)");
  }
  if (!(o.request_rate > 0)) {
    return absl::InvalidArgumentError("request_rate must be > 0 (or inf)");
  }
  if (!(o.burstiness > 0) || std::isinf(o.burstiness)) {
    return absl::InvalidArgumentError("burstiness must be a finite > 0");
  }
  const int64_t longest =
      int64_t{Bounds(o.input_len, o.input_len_range, 2).second} +
      Bounds(o.output_len, o.output_len_range, 1).second;
  if (max_context > 0 && longest > max_context) {
    return absl::InvalidArgumentError(
        absl::StrCat("the longest request (", longest,
                     " prompt + output tokens) exceeds the model's context (",
                     max_context, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadPassages(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      out.push_back(line);
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " has no text"));
  }
  return out;
}

absl::StatusOr<PromptSource> BuildPromptSource(
    const std::vector<std::string>& passages, const TokenizeFn& tokenize,
    int64_t min_tokens, int32_t bos_id, int32_t vocab_size) {
  PromptSource s;
  s.bos_id = bos_id;
  s.vocab_size = vocab_size;
  for (const std::string& p : passages) {
    if (static_cast<int64_t>(s.pool.size()) >= min_tokens) break;
    absl::StatusOr<std::vector<int32_t>> ids = tokenize(p);
    if (!ids.ok()) return ids.status();
    if (ids->empty()) continue;
    s.starts.push_back(static_cast<int64_t>(s.pool.size()));
    s.pool.insert(s.pool.end(), ids->begin(), ids->end());
  }
  if (s.pool.empty()) {
    return absl::InvalidArgumentError("the dataset tokenized to nothing");
  }
  return s;
}

Workload::Workload(const WorkloadOptions& options, const PromptSource* source)
    : options_(options),
      source_(source),
      arrivals_(options.request_rate, options.burstiness, options.seed) {}

RequestSpec Workload::Next() {
  RequestSpec r;
  r.index = next_++;
  r.arrival_s = arrivals_.Next();
  std::mt19937_64 rng(Mix(options_.seed * 0x100000001b3ULL + Mix(r.index)));
  auto [in_lo, in_hi] = Bounds(options_.input_len, options_.input_len_range, 2);
  auto [out_lo, out_hi] =
      Bounds(options_.output_len, options_.output_len_range, 1);
  const int32_t in_len =
      std::uniform_int_distribution<int32_t>(in_lo, in_hi)(rng);
  r.output_len = std::uniform_int_distribution<int32_t>(out_lo, out_hi)(rng);
  r.prompt_token_ids.reserve(in_len);
  r.prompt_token_ids.push_back(source_->bos_id);
  if (!source_->pool.empty()) {
    const size_t n = source_->pool.size();
    size_t pos = static_cast<size_t>(
        source_->starts[std::uniform_int_distribution<size_t>(
            0, source_->starts.size() - 1)(rng)]);
    for (int32_t i = 1; i < in_len; ++i) {
      r.prompt_token_ids.push_back(source_->pool[pos]);
      pos = (pos + 1) % n;
    }
  } else {
    std::uniform_int_distribution<int32_t> id(source_->first_synthetic_id,
                                              source_->vocab_size - 1);
    for (int32_t i = 1; i < in_len; ++i) r.prompt_token_ids.push_back(id(rng));
  }
  return r;
}

}  // namespace latentkv::bench
