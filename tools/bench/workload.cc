#include "tools/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/text_lines.h"

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

// Appends n prompt tokens from the source: consecutive pool tokens from
// `pos` (wrapping), or uniform synthetic ids.
void AppendTokens(const PromptSource& s, std::mt19937_64& rng, size_t pos,
                  int32_t n, std::vector<int32_t>* out) {
  if (!s.pool.empty()) {
    for (int32_t i = 0; i < n; ++i) {
      out->push_back(s.pool[pos]);
      pos = (pos + 1) % s.pool.size();
    }
    return;
  }
  std::uniform_int_distribution<int32_t> id(s.first_synthetic_id,
                                            s.vocab_size - 1);
  for (int32_t i = 0; i < n; ++i) out->push_back(id(rng));
}

// A uniformly random pool position (0 without a pool).
size_t AnyPosition(const PromptSource& s, std::mt19937_64& rng) {
  if (s.pool.empty()) return 0;
  return std::uniform_int_distribution<size_t>(0, s.pool.size() - 1)(rng);
}

// Group g's prefix: BOS + prefix_len - 1 tokens from a random place in the
// source, redrawn (a bounded number of times) while its first
// kPrefixDistinctTokens tokens equal an earlier group's.
std::vector<std::vector<int32_t>> MakePrefixes(const WorkloadOptions& o,
                                               const PromptSource& s) {
  std::vector<std::vector<int32_t>> out;
  const size_t head =
      static_cast<size_t>(std::min(o.prefix_len, kPrefixDistinctTokens));
  for (int32_t g = 0; g < o.prefix_groups; ++g) {
    std::mt19937_64 rng(Mix(o.seed * 0x100000001b3ULL ^ Mix(~uint64_t(g))));
    std::vector<int32_t> p;
    for (int attempt = 0; attempt < 1000; ++attempt) {
      p.assign(1, s.bos_id);
      AppendTokens(s, rng, AnyPosition(s, rng), o.prefix_len - 1, &p);
      const bool clash = std::any_of(
          out.begin(), out.end(), [&](const std::vector<int32_t>& q) {
            return std::equal(p.begin(), p.begin() + head, q.begin());
          });
      if (!clash) break;
    }
    out.push_back(std::move(p));
  }
  return out;
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
  const bool prefixed = o.prefix_groups > 0;
  if (o.prefix_groups < 0) {
    return absl::InvalidArgumentError("prefix_groups must be >= 0");
  }
  if (prefixed && o.prefix_len < 2) {
    return absl::InvalidArgumentError(
        "prefix_len must be >= 2 (BOS + text) with prefix_groups");
  }
  if (!prefixed && o.input_len < 2) {
    return absl::InvalidArgumentError("input_len must be >= 2 (BOS + text)");
  }
  if (prefixed && o.input_len < 1) {
    return absl::InvalidArgumentError(
        "input_len (the suffix after a shared prefix) must be >= 1");
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
      (prefixed ? int64_t{o.prefix_len} : 0) +
      Bounds(o.input_len, o.input_len_range, prefixed ? 1 : 2).second +
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
  while (GetTextLine(in, &line)) {
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
      arrivals_(options.request_rate, options.burstiness, options.seed),
      prefixes_(MakePrefixes(options, *source)) {}

RequestSpec Workload::Next() {
  RequestSpec r;
  r.index = next_++;
  r.arrival_s = arrivals_.Next();
  std::mt19937_64 rng(Mix(options_.seed * 0x100000001b3ULL + Mix(r.index)));
  const bool prefixed = !prefixes_.empty();
  auto [in_lo, in_hi] =
      Bounds(options_.input_len, options_.input_len_range, prefixed ? 1 : 2);
  auto [out_lo, out_hi] =
      Bounds(options_.output_len, options_.output_len_range, 1);
  const int32_t in_len =
      std::uniform_int_distribution<int32_t>(in_lo, in_hi)(rng);
  r.output_len = std::uniform_int_distribution<int32_t>(out_lo, out_hi)(rng);
  if (prefixed) {
    // The group's prefix, then a suffix from a random place in the source.
    const std::vector<int32_t>& prefix =
        prefixes_[std::uniform_int_distribution<size_t>(
            0, prefixes_.size() - 1)(rng)];
    r.prompt_token_ids.reserve(prefix.size() + in_len);
    r.prompt_token_ids = prefix;
    AppendTokens(*source_, rng, AnyPosition(*source_, rng), in_len,
                 &r.prompt_token_ids);
    return r;
  }
  r.prompt_token_ids.reserve(in_len);
  r.prompt_token_ids.push_back(source_->bos_id);
  size_t pos = 0;
  if (!source_->pool.empty()) {
    pos = static_cast<size_t>(
        source_->starts[std::uniform_int_distribution<size_t>(
            0, source_->starts.size() - 1)(rng)]);
  }
  AppendTokens(*source_, rng, pos, in_len - 1, &r.prompt_token_ids);
  return r;
}

}  // namespace latentkv::bench
