// Prefill -> decode KV transfer between tensor-parallel groups on CPU, same
// vs mixed sizes: a prefill group of P ranks serves Worker.Prefill over
// loopback gRPC (in-process servers), a decode group of D ranks imports the
// KV; ranks are threads with real Gloo communicators. Each iteration runs,
// on the same prompt: a plain prefill on the prefill group (the baseline:
// the same compute); the leader relay (prefill + gather to the prefill
// leader + stream + split + scatter from the decode leader + import); and
// the rank-to-rank pull (prefill + each prefill rank parks its heads + each
// decode rank pulls its own heads from the prefill ranks' KvSource servers
// + import). With P = D = 1 both paths stream inline.
//
// Counters per prompt token: kv_bytes (what crosses between the groups: every
// KV head's latent rows once, the same for every P and D, either path),
// relay_group_bytes (what the leaders relay inside their groups: (P-1)/P of
// the rows on the prefill side plus (D-1)/D on the decode side; the pull
// moves none), relay_/pull_overhead_us (over the local prefill) and
// pull_vs_relay (pull time / relay time).
//
// Model: a synthetic 4-layer Llama, hidden 512, 8 heads = 8 KV heads of 64,
// KV-Latent d_qk = d_vo = 32 (random weights).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "bench/transfer_bench_util.h"
#include "grpcpp/grpcpp.h"
#include "model/convert.h"
#include "worker/engine/model_runner.h"
#include "worker/server/kv_source.h"
#include "worker/server/kv_transfer.h"
#include "worker/server/worker_service.h"
#include "worker/tp/in_process_group.h"

namespace lk = latentkv;
namespace pb = ::latentkv::v1;

namespace {

std::shared_ptr<const lk::model::ModelWeights> Weights() {
  static auto w = [] {
    char tmpl[] = "/tmp/latentkv-tp-transfer-bench-XXXXXX";
    const std::string dir = std::string(mkdtemp(tmpl)) + "/m";
    lk::model::ModelConfig c =
        lk::model::ModelConfig::Llama(512, 1376, 4, 8, 8, 4096, 2048);
    c.qk_head_dim.assign(4, 32);
    c.vo_head_dim.assign(4, 32);
    if (!lk::model::WriteSyntheticModel(c, dir, lk::DType::kF32, 1).ok()) {
      std::abort();
    }
    return std::shared_ptr<const lk::model::ModelWeights>(
        std::move(*lk::model::LoadModel(dir)));
  }();
  return w;
}

lk::worker::EngineOptions Options() {
  lk::worker::EngineOptions o;
  o.kv.max_bytes = int64_t{256} << 20;
  o.scheduler.max_step_tokens = 2048;
  o.prefix_caching = false;  // every iteration sends the same prompt
  return o;
}

struct Setup {
  std::vector<std::unique_ptr<lk::worker::KvParking>> parking;  // [P]
  std::vector<std::unique_ptr<lk::worker::KvSourceService>> sources;
  std::vector<std::unique_ptr<grpc::Server>> source_servers;       // ranks 1..
  std::vector<std::unique_ptr<lk::worker::GrpcKvPuller>> pullers;  // [D]
  std::unique_ptr<lk::worker::InProcessGroup> prefill, decode;
  std::unique_ptr<lk::worker::WorkerService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

std::unique_ptr<grpc::Server> Serve(grpc::Service* a, grpc::Service* b,
                                    std::string* address) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(a);
  if (b != nullptr) builder.RegisterService(b);
  auto server = builder.BuildAndStart();
  *address = "127.0.0.1:" + std::to_string(port);
  return server;
}

Setup& Get(int p, int d) {
  static std::map<std::pair<int, int>, std::unique_ptr<Setup>> setups;
  if (auto it = setups.find({p, d}); it != setups.end()) return *it->second;
  setups.clear();  // one pair of groups alive at a time
  auto& s = setups[{p, d}];
  s = std::make_unique<Setup>();
  const int heads = Weights()->config.num_kv_heads;
  for (int r = 0; r < p; ++r) {
    lk::worker::KvParkingOptions ko;
    ko.head_offset = r * heads / p;
    s->parking.push_back(std::make_unique<lk::worker::KvParking>(ko));
    lk::worker::KvSourceOptions kso;
    kso.tp_size = p;
    s->sources.push_back(std::make_unique<lk::worker::KvSourceService>(
        s->parking.back().get(), kso));
  }
  std::vector<std::string> rank_addresses(p);
  for (int r = 1; r < p; ++r) {
    s->source_servers.push_back(
        Serve(s->sources[r].get(), nullptr, &rank_addresses[r]));
  }
  for (int r = 0; r < d; ++r) {
    lk::worker::KvPullerOptions po;
    po.head_begin = r * heads / d;
    po.head_end = (r + 1) * heads / d;
    po.group_shapes = lk::worker::KvShapesOf(Weights()->config);
    s->pullers.push_back(std::make_unique<lk::worker::GrpcKvPuller>(po));
  }
  s->prefill = std::make_unique<lk::worker::InProcessGroup>(
      Weights(), p, Options(), [&](int r, lk::worker::EngineOptions* o) {
        o->kv_parking = s->parking[r].get();
      });
  s->decode = std::make_unique<lk::worker::InProcessGroup>(
      Weights(), d, Options(), [&](int r, lk::worker::EngineOptions* o) {
        o->kv_puller = s->pullers[r].get();
      });
  lk::worker::WorkerServiceOptions so;
  so.tp_size = p;
  so.kv_parking = s->parking[0].get();
  so.rank_addresses = rank_addresses;
  s->service =
      std::make_unique<lk::worker::WorkerService>(&s->prefill->engine(), so);
  s->server = Serve(s->service.get(), s->sources[0].get(), &s->address);
  return *s;
}

void BM_GroupTransfer(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  const int d = static_cast<int>(state.range(1));
  const int n = static_cast<int>(state.range(2));
  Setup& s = Get(p, d);
  const std::vector<int32_t> prompt = lk::bench::SyntheticPrompt(n);
  pb::PrefillRequest req;
  req.set_request_id("bench");
  for (int32_t t : prompt) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_tokens(1);
  req.mutable_sampling()->set_ignore_eos(true);
  req.set_puller_tp_size(static_cast<uint32_t>(d));
  lk::worker::Engine& decode = s.decode->engine();
  const pb::KvLayout ours = lk::worker::TransferLayout(
      lk::worker::GroupKvShapes(decode.kv_shapes(), d), decode.kv_dtype(), d);
  double local_s = 0, relay_s = 0, pull_s = 0, bytes = 0;
  int64_t serial = 0;
  for (auto _ : state) {
    lk::worker::GenerationRequest local;
    local.id = "local";
    local.prompt = prompt;
    local.max_new_tokens = 1;
    local_s += lk::bench::RunToEnd(s.prefill->engine(), std::move(local));
    double t_all = 0;
    for (const bool pull : {false, true}) {
      const auto t0 = std::chrono::steady_clock::now();
      req.set_rank_pull(pull);
      auto r = lk::worker::CallPrefill(s.address, req, ours, absl::Seconds(60));
      if (!r.ok()) {
        state.SkipWithError(r.status().ToString().c_str());
        return;
      }
      lk::worker::GenerationRequest im;
      im.id = "decode" + std::to_string(serial++);
      im.prompt = prompt;
      im.max_new_tokens = 1;
      if (!r->pull.transfer_id.empty()) {
        // The decode leader's heads, then the other ranks' (engine).
        int64_t moved = 0;
        auto mine = s.pullers[0]->Pull(r->pull, &moved);
        if (!mine.ok()) {
          state.SkipWithError(mine.status().ToString().c_str());
          return;
        }
        r->kv =
            std::make_shared<const lk::worker::KvSnapshot>(*std::move(mine));
        if (d > 1) im.import_pull = r->pull;
      }
      if (r->kv == nullptr) {
        state.SkipWithError("the first token ended the prompt");
        return;
      }
      im.import_kv = r->kv;
      im.import_first_token = r->first_token;
      lk::bench::RunToEnd(decode, std::move(im));
      const double t =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      (pull ? pull_s : relay_s) += t;
      t_all += t;
      if (!pull) bytes = static_cast<double>(r->kv->bytes());
    }
    state.SetIterationTime(t_all);
  }
  if (decode.Stats().kv_import_failures > 0) {
    state.SkipWithError("an import failed (prefilled locally)");
    return;
  }
  const double it = static_cast<double>(state.iterations());
  const double relayed =
      bytes * (static_cast<double>(p - 1) / p + static_cast<double>(d - 1) / d);
  state.counters["kv_bytes_per_token"] = bytes / n;
  state.counters["relay_group_bytes_per_token"] = relayed / n;
  state.counters["local_prefill_ms"] = 1e3 * local_s / it;
  state.counters["relay_ms"] = 1e3 * relay_s / it;
  state.counters["pull_ms"] = 1e3 * pull_s / it;
  state.counters["relay_overhead_us_per_token"] =
      1e6 * (relay_s - local_s) / it / n;
  state.counters["pull_overhead_us_per_token"] =
      1e6 * (pull_s - local_s) / it / n;
  state.counters["pull_vs_relay"] = pull_s / relay_s;
}

BENCHMARK(BM_GroupTransfer)
    ->ArgNames({"P", "D", "prompt"})
    ->Args({1, 1, 512})
    ->Args({2, 2, 512})
    ->Args({2, 1, 512})
    ->Args({1, 2, 512})
    ->Args({2, 4, 512})
    ->Args({4, 2, 512})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
