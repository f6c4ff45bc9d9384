#include "tools/bench/serve_bench.h"

#include <cmath>
#include <cstdio>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/bench/client.h"
#include "tools/bench/phase.h"

namespace latentkv::bench {
namespace {

namespace pb = ::latentkv::v1;

// Tokens of real text kept for prompts (more if the dataset is that long).
constexpr int64_t kPoolTokens = 1 << 16;

struct ModelFacts {
  int32_t vocab_size = 0;
  int64_t max_context = 0;
};

absl::StatusOr<ModelFacts> ListModel(pb::Generation::Stub& stub,
                                     const std::string& address) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  pb::ListModelsResponse resp;
  grpc::Status st = stub.ListModels(&ctx, {}, &resp);
  if (!st.ok() || resp.models_size() == 0) {
    return absl::UnavailableError(absl::StrCat(
        "ListModels on ", address, " failed: ", st.error_message()));
  }
  return ModelFacts{static_cast<int32_t>(resp.models(0).vocab_size()),
                    resp.models(0).max_context()};
}

absl::StatusOr<std::vector<int32_t>> Tokenize(pb::Generation::Stub& stub,
                                              const std::string& text,
                                              bool add_bos) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  pb::TokenizeRequest req;
  req.set_text(text);
  req.set_add_bos(add_bos);
  pb::TokenizeResponse resp;
  grpc::Status st = stub.Tokenize(&ctx, req, &resp);
  if (!st.ok()) {
    return absl::UnavailableError(
        absl::StrCat("Tokenize failed: ", st.error_message()));
  }
  return std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end());
}

ClientOptions ClientFor(const ServeBenchOptions& o, const Target& t) {
  ClientOptions c;
  c.address = t.address;
  c.channels = o.channels;
  c.cq_threads = o.cq_threads;
  c.kv_cache_mode = t.kv_cache_mode;
  c.temperature = o.temperature;
  c.ignore_eos = o.ignore_eos;
  c.request_timeout_s = o.request_timeout_s;
  c.keep_token_ids = o.keep_token_ids;
  return c;
}

// The prompt source, built once from the first target (the tokenizer is the
// coordinator's), and checked against every target's vocabulary.
absl::StatusOr<PromptSource> MakePromptSource(const ServeBenchOptions& o) {
  StreamingClient first(ClientFor(o, o.targets[0]));
  absl::StatusOr<ModelFacts> facts =
      ListModel(first.stub(), o.targets[0].address);
  if (!facts.ok()) return facts.status();
  absl::Status valid = ValidateWorkload(o.workload, facts->max_context);
  if (!valid.ok()) return valid;
  for (size_t i = 1; i < o.targets.size(); ++i) {
    StreamingClient other(ClientFor(o, o.targets[i]));
    absl::StatusOr<ModelFacts> f =
        ListModel(other.stub(), o.targets[i].address);
    if (!f.ok()) return f.status();
    if (f->vocab_size != facts->vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets serve different vocabularies (", facts->vocab_size, " vs ",
          f->vocab_size, "): the same token ids cannot be sent to both"));
    }
  }
  absl::StatusOr<std::vector<int32_t>> bos = Tokenize(first.stub(), "", true);
  if (!bos.ok()) return bos.status();
  if (bos->size() != 1) {
    return absl::FailedPreconditionError("the server's tokenizer has no BOS");
  }
  if (o.dataset.empty()) {
    PromptSource s;
    s.bos_id = (*bos)[0];
    s.vocab_size = facts->vocab_size;
    if (s.first_synthetic_id >= s.vocab_size) s.first_synthetic_id = 0;
    return s;
  }
  absl::StatusOr<std::vector<std::string>> passages = ReadPassages(o.dataset);
  if (!passages.ok()) return passages.status();
  return BuildPromptSource(
      *passages,
      [&](const std::string& text) {
        return Tokenize(first.stub(), text, /*add_bos=*/false);
      },
      kPoolTokens, (*bos)[0], facts->vocab_size);
}

std::string RateName(double r) {
  return std::isinf(r) ? "inf" : absl::StrCat(r);
}

}  // namespace

absl::StatusOr<pb::KvCacheMode> ParseKvCacheMode(absl::string_view name) {
  if (name == "default") return pb::KV_CACHE_MODE_SERVER_DEFAULT;
  if (name == "full") return pb::KV_CACHE_MODE_FULL;
  if (name == "compressed") return pb::KV_CACHE_MODE_COMPRESSED;
  return absl::InvalidArgumentError(absl::StrCat(
      "kv_cache_mode '", name, "': expected default, full or compressed"));
}

std::string KvCacheModeName(pb::KvCacheMode mode) {
  switch (mode) {
    case pb::KV_CACHE_MODE_FULL:
      return "full";
    case pb::KV_CACHE_MODE_COMPRESSED:
      return "compressed";
    default:
      return "default";
  }
}

absl::StatusOr<Target> ParseTarget(absl::string_view spec) {
  Target t;
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ',');
  const size_t eq = parts[0].find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == parts[0].size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target '", spec, "': expected label=HOST:PORT[,kv_cache_mode=MODE]"));
  }
  t.label = std::string(parts[0].substr(0, eq));
  t.address = std::string(parts[0].substr(eq + 1));
  for (size_t i = 1; i < parts.size(); ++i) {
    std::vector<absl::string_view> kv = absl::StrSplit(parts[i], '=');
    if (kv.size() != 2 || kv[0] != "kv_cache_mode") {
      return absl::InvalidArgumentError(
          absl::StrCat("target '", spec, "': unknown option '", parts[i], "'"));
    }
    absl::StatusOr<pb::KvCacheMode> m = ParseKvCacheMode(kv[1]);
    if (!m.ok()) return m.status();
    t.kv_cache_mode = *m;
  }
  return t;
}

absl::StatusOr<std::vector<double>> ParseRates(absl::string_view spec) {
  std::vector<double> rates;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    double r = 0;
    if (!absl::SimpleAtod(part, &r) || !(r > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request rate '", part, "': expected a number > 0 or inf"));
    }
    rates.push_back(r);
  }
  return rates;
}

absl::StatusOr<std::vector<PhaseReport>> RunServeBench(
    const ServeBenchOptions& o) {
  if (o.targets.empty()) return absl::InvalidArgumentError("no target");
  if (o.rates.empty()) return absl::InvalidArgumentError("no request rate");
  for (double r : o.rates) {
    WorkloadOptions w = o.workload;
    w.request_rate = r;
    absl::Status valid = ValidateWorkload(w, /*max_context=*/0);
    if (!valid.ok()) return valid;
  }
  absl::StatusOr<PromptSource> source = MakePromptSource(o);
  if (!source.ok()) return source.status();
  // Rate-major: every target at one rate before the next rate, so a drift
  // in the machine's load over the run touches all targets alike.
  std::vector<std::unique_ptr<StreamingClient>> clients;
  for (const Target& target : o.targets) {
    clients.push_back(std::make_unique<StreamingClient>(ClientFor(o, target)));
  }
  std::vector<PhaseReport> reports;
  for (double rate : o.rates) {
    for (size_t t = 0; t < o.targets.size(); ++t) {
      const Target& target = o.targets[t];
      WorkloadOptions w = o.workload;
      w.request_rate = rate;
      Workload workload(w, &*source);
      PhaseOptions po;
      po.concurrency = o.concurrency;
      po.num_requests = o.num_requests;
      po.duration_s = o.duration_s;
      po.progress = o.progress;
      po.label = absl::StrCat(target.label, " rate=", RateName(rate));
      absl::StatusOr<PhaseResult> r = RunPhase(*clients[t], workload, po);
      if (!r.ok()) return r.status();
      PhaseReport rep;
      rep.target = target;
      rep.request_rate = rate;
      rep.summary = SummarizePhase(r->records, r->duration_s, o.slo);
      rep.records = std::move(r->records);
      reports.push_back(std::move(rep));
    }
  }
  return reports;
}

}  // namespace latentkv::bench
