#include "tools/bench/report.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace latentkv::bench {
namespace {

using nlohmann::json;

json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Milliseconds to microsecond resolution keep the file small.
json Ms(double v) {
  return std::isfinite(v) ? json(std::round(v * 1000.0) / 1000.0)
                          : json(nullptr);
}

json DistJson(const Distribution& d) {
  return {{"count", d.count},        {"mean", Num(d.mean)}, {"std", Num(d.std)},
          {"median", Num(d.median)}, {"p90", Num(d.p90)},   {"p99", Num(d.p99)},
          {"min", Num(d.min)},       {"max", Num(d.max)}};
}

json SummaryJson(const PhaseSummary& s) {
  json errors = json::object();
  for (const auto& [code, n] : s.errors) errors[code] = n;
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"errors", errors},
          {"duration_s", s.duration_s},
          {"input_tokens", s.input_tokens},
          {"output_tokens", s.output_tokens},
          {"request_throughput", s.request_throughput},
          {"output_throughput", s.output_throughput},
          {"total_throughput", s.total_throughput},
          {"goodput", s.has_slo ? json(s.goodput) : json(nullptr)},
          {"good_requests", s.has_slo ? json(s.good_requests) : json(nullptr)},
          {"ttft_ms", DistJson(s.ttft_ms)},
          {"tpot_ms", DistJson(s.tpot_ms)},
          {"itl_ms", DistJson(s.itl_ms)},
          {"e2e_ms", DistJson(s.e2e_ms)}};
}

json RecordJson(const RequestRecord& r) {
  json itl = json::array();
  for (double v : r.metrics.itl_ms) itl.push_back(Ms(v));
  json j = {{"index", r.index},
            {"prompt_tokens", r.prompt_tokens},
            {"max_tokens", r.max_tokens},
            {"output_tokens", r.metrics.output_tokens},
            {"scheduled_s", r.scheduled_s},
            {"sent_s", r.sent_s},
            {"status", r.status},
            {"error", r.error},
            {"finish_reason", r.finish_reason},
            {"usage_prompt_tokens", r.usage_prompt_tokens},
            {"usage_completion_tokens", r.usage_completion_tokens},
            {"messages", r.messages.size()},
            {"ttft_ms", Ms(r.metrics.ttft_ms)},
            {"tpot_ms", Ms(r.metrics.tpot_ms)},
            {"e2e_ms", Ms(r.metrics.e2e_ms)},
            {"itl_ms", itl}};
  if (!r.token_ids.empty()) j["token_ids"] = r.token_ids;
  return j;
}

std::string Fmt(double v, int decimals) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  return absl::StrFormat("%.*f", decimals, v);
}

}  // namespace

json ToJson(const ServeBenchOptions& o,
            const std::vector<PhaseReport>& phases) {
  json targets = json::array();
  for (const Target& t : o.targets) {
    targets.push_back({{"label", t.label},
                       {"address", t.address},
                       {"kv_cache_mode", KvCacheModeName(t.kv_cache_mode)}});
  }
  json rates = json::array();
  for (double r : o.rates) rates.push_back(Num(r));
  const WorkloadOptions& w = o.workload;
  json config = {{"targets", targets},
                 {"request_rates", rates},
                 {"burstiness", w.burstiness},
                 {"concurrency", o.concurrency},
                 {"num_requests", o.num_requests},
                 {"duration_s", o.duration_s},
                 {"dataset", o.dataset.empty() ? "synthetic" : o.dataset},
                 {"input_len", w.input_len},
                 {"input_len_range", w.input_len_range},
                 {"output_len", w.output_len},
                 {"output_len_range", w.output_len_range},
                 {"prefix_groups", w.prefix_groups},
                 {"prefix_len", w.prefix_len},
                 {"seed", w.seed},
                 {"temperature", o.temperature},
                 {"ignore_eos", o.ignore_eos},
                 {"request_timeout_s", o.request_timeout_s},
                 {"slo_ttft_ms", Num(o.slo.ttft_ms)},
                 {"slo_tpot_ms", Num(o.slo.tpot_ms)},
                 {"slo_e2e_ms", Num(o.slo.e2e_ms)},
                 {"itl_convention",
                  "per token: a message with k tokens is one gap then k-1 "
                  "zero gaps"}};
  json out = {{"config", config}, {"phases", json::array()}};
  for (const PhaseReport& p : phases) {
    json records = json::array();
    for (const RequestRecord& r : p.records) records.push_back(RecordJson(r));
    out["phases"].push_back(
        {{"target", p.target.label},
         {"address", p.target.address},
         {"kv_cache_mode", KvCacheModeName(p.target.kv_cache_mode)},
         {"request_rate", Num(p.request_rate)},
         {"summary", SummaryJson(p.summary)},
         {"requests", records}});
  }
  return out;
}

std::string FormatTable(const std::vector<PhaseReport>& phases) {
  std::set<std::string> targets;
  std::set<double> rates;
  std::set<std::string> codes;
  bool slo = false;
  for (const PhaseReport& p : phases) {
    targets.insert(p.target.label);
    rates.insert(p.request_rate);
    for (const auto& [code, n] : p.summary.errors) codes.insert(code);
    slo = slo || p.summary.has_slo;
  }
  std::vector<std::string> heads;
  for (const PhaseReport& p : phases) {
    std::string h;
    if (targets.size() > 1) h = p.target.label;
    if (rates.size() > 1 || targets.size() == 1) {
      absl::StrAppend(
          &h, h.empty() ? "" : " ", "rate=",
          Fmt(p.request_rate,
              p.request_rate == std::floor(p.request_rate) ? 0 : 2));
    }
    heads.push_back(h);
  }
  constexpr int kName = 36;
  int width = 12;
  for (const std::string& h : heads) {
    width = std::max<int>(width, static_cast<int>(h.size()) + 2);
  }
  const int total = kName + width * static_cast<int>(phases.size());
  std::string out;
  auto rule = [&](const std::string& title, char c) {
    const int pad = std::max<int>(0, total - static_cast<int>(title.size()));
    out +=
        std::string(pad / 2, c) + title + std::string(pad - pad / 2, c) + "\n";
  };
  auto row = [&](const std::string& name, auto value) {
    out += absl::StrFormat("%-*s", kName, name);
    for (const PhaseReport& p : phases) {
      out += absl::StrFormat("%*s", width, value(p));
    }
    out += "\n";
  };
  rule(" Serving Benchmark Result ", '=');
  out += absl::StrFormat("%-*s", kName, "");
  for (const std::string& h : heads) out += absl::StrFormat("%*s", width, h);
  out += "\n";
  const auto& S = [](const PhaseReport& p) -> const PhaseSummary& {
    return p.summary;
  };
  row("Successful requests:",
      [&](const PhaseReport& p) { return absl::StrCat(S(p).completed); });
  row("Failed requests:",
      [&](const PhaseReport& p) { return absl::StrCat(S(p).failed); });
  for (const std::string& code : codes) {
    row("  " + code + ":", [&](const PhaseReport& p) {
      auto it = S(p).errors.find(code);
      return absl::StrCat(it == S(p).errors.end() ? 0 : it->second);
    });
  }
  row("Benchmark duration (s):",
      [&](const PhaseReport& p) { return Fmt(S(p).duration_s, 2); });
  row("Total input tokens:",
      [&](const PhaseReport& p) { return absl::StrCat(S(p).input_tokens); });
  row("Total generated tokens:",
      [&](const PhaseReport& p) { return absl::StrCat(S(p).output_tokens); });
  row("Request throughput (req/s):",
      [&](const PhaseReport& p) { return Fmt(S(p).request_throughput, 2); });
  row("Output token throughput (tok/s):",
      [&](const PhaseReport& p) { return Fmt(S(p).output_throughput, 2); });
  row("Total token throughput (tok/s):",
      [&](const PhaseReport& p) { return Fmt(S(p).total_throughput, 2); });
  if (slo) {
    row("Request goodput (req/s):",
        [&](const PhaseReport& p) { return Fmt(S(p).goodput, 2); });
  }
  struct Section {
    const char* title;
    const char* name;
    Distribution PhaseSummary::*dist;
  };
  for (const Section& sec :
       {Section{" Time to First Token ", "TTFT", &PhaseSummary::ttft_ms},
        Section{" Time per Output Token (excl. 1st token) ", "TPOT",
                &PhaseSummary::tpot_ms},
        Section{" Inter-token Latency ", "ITL", &PhaseSummary::itl_ms},
        Section{" End-to-end Latency ", "E2E", &PhaseSummary::e2e_ms}}) {
    rule(sec.title, '-');
    struct Stat {
      const char* name;
      double Distribution::*v;
    };
    for (const Stat& st :
         {Stat{"Mean", &Distribution::mean}, Stat{"Std", &Distribution::std},
          Stat{"Median", &Distribution::median},
          Stat{"P90", &Distribution::p90}, Stat{"P99", &Distribution::p99}}) {
      row(absl::StrCat(st.name, " ", sec.name, " (ms):"),
          [&](const PhaseReport& p) { return Fmt(S(p).*sec.dist.*st.v, 2); });
    }
  }
  rule("", '=');
  return out;
}

}  // namespace latentkv::bench
