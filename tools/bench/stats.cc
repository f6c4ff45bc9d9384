#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace latentkv::bench {

RequestMetrics ComputeRequestMetrics(
    const std::vector<MessageArrival>& messages) {
  RequestMetrics m;
  if (messages.empty()) return m;
  m.e2e_ms = messages.back().t_ms;
  double last_token_t = kNaN;
  for (const MessageArrival& msg : messages) {
    if (msg.tokens <= 0) continue;
    if (std::isnan(last_token_t)) {
      m.ttft_ms = msg.t_ms;
    } else {
      m.itl_ms.push_back(msg.t_ms - last_token_t);
    }
    for (int32_t k = 1; k < msg.tokens; ++k) m.itl_ms.push_back(0.0);
    last_token_t = msg.t_ms;
    m.output_tokens += msg.tokens;
  }
  if (m.output_tokens >= 2) {
    m.tpot_ms = (m.e2e_ms - m.ttft_ms) / (m.output_tokens - 1);
  }
  return m;
}

double Percentile(const std::vector<double>& sorted, double p) {
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] +
         (rank - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

Distribution Summarize(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(),
                              [](double v) { return std::isnan(v); }),
               values.end());
  Distribution d;
  d.count = static_cast<int64_t>(values.size());
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  double sq = 0;
  for (double v : values) sq += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(sq / static_cast<double>(values.size()));
  d.median = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  d.min = values.front();
  d.max = values.back();
  return d;
}

absl::StatusOr<Slo> ParseSlo(absl::string_view spec) {
  Slo slo;
  if (spec.empty()) return absl::InvalidArgumentError("empty SLO spec");
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, ':');
    double ms = 0;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms) || !(ms > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SLO '", part, "': expected ttft:MS, tpot:MS or e2e:MS, MS > 0"));
    }
    if (kv[0] == "ttft") {
      slo.ttft_ms = ms;
    } else if (kv[0] == "tpot") {
      slo.tpot_ms = ms;
    } else if (kv[0] == "e2e") {
      slo.e2e_ms = ms;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown SLO metric '", kv[0], "' (ttft, tpot, e2e)"));
    }
  }
  return slo;
}

bool MeetsSlo(const RequestMetrics& m, const Slo& slo) {
  auto within = [](double v, double bound) {
    return bound == kInf || (!std::isnan(v) && v <= bound);
  };
  const bool tpot_ok = m.output_tokens < 2 || within(m.tpot_ms, slo.tpot_ms);
  return within(m.ttft_ms, slo.ttft_ms) && tpot_ok &&
         within(m.e2e_ms, slo.e2e_ms);
}

PhaseSummary SummarizePhase(const std::vector<RequestRecord>& records,
                            double duration_s, const Slo& slo) {
  PhaseSummary s;
  s.duration_s = duration_s;
  s.has_slo = slo.any();
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestRecord& r : records) {
    if (!r.ok()) {
      ++s.failed;
      ++s.errors[r.status];
      continue;
    }
    ++s.completed;
    s.input_tokens += r.prompt_tokens;
    s.output_tokens += r.metrics.output_tokens;
    ttft.push_back(r.metrics.ttft_ms);
    tpot.push_back(r.metrics.tpot_ms);
    e2e.push_back(r.metrics.e2e_ms);
    itl.insert(itl.end(), r.metrics.itl_ms.begin(), r.metrics.itl_ms.end());
    if (MeetsSlo(r.metrics, slo)) ++s.good_requests;
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.output_throughput = static_cast<double>(s.output_tokens) / duration_s;
    s.total_throughput =
        static_cast<double>(s.input_tokens + s.output_tokens) / duration_s;
    s.goodput = static_cast<double>(s.good_requests) / duration_s;
  }
  s.ttft_ms = Summarize(std::move(ttft));
  s.tpot_ms = Summarize(std::move(tpot));
  s.itl_ms = Summarize(std::move(itl));
  s.e2e_ms = Summarize(std::move(e2e));
  return s;
}

}  // namespace latentkv::bench
