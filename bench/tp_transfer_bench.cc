// Prefill -> decode KV transfer between tensor-parallel groups on CPU, same
// vs mixed sizes: a prefill group of P ranks serves Worker.Prefill over
// loopback gRPC (in-process server), a decode group of D ranks imports the
// KV; ranks are threads with real Gloo communicators. Each iteration also
// runs a plain prefill of the same prompt on the prefill group (the
// baseline measured alongside, the same compute): overhead = remote
// (prefill + gather + stream + split + scatter + import) - plain prefill.
//
// Counters per prompt token: kv_bytes (what crosses between the groups: every
// KV head's latent rows once, the same for every P and D), group_bytes (what
// the leaders relay inside their groups: the other ranks' heads, (P-1)/P of
// the rows on the prefill side plus (D-1)/D on the decode side) and
// overhead_us; overhead_vs_local is the ratio to the local prefill.
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
  std::unique_ptr<lk::worker::InProcessGroup> prefill, decode;
  std::unique_ptr<lk::worker::WorkerService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

Setup& Get(int p, int d) {
  static std::map<std::pair<int, int>, std::unique_ptr<Setup>> setups;
  if (auto it = setups.find({p, d}); it != setups.end()) return *it->second;
  setups.clear();  // one pair of groups alive at a time
  auto& s = setups[{p, d}];
  s = std::make_unique<Setup>();
  s->prefill =
      std::make_unique<lk::worker::InProcessGroup>(Weights(), p, Options());
  s->decode =
      std::make_unique<lk::worker::InProcessGroup>(Weights(), d, Options());
  lk::worker::WorkerServiceOptions so;
  so.tp_size = p;
  s->service =
      std::make_unique<lk::worker::WorkerService>(&s->prefill->engine(), so);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.SetMaxSendMessageSize(256 << 20);
  b.RegisterService(s->service.get());
  s->server = b.BuildAndStart();
  s->address = "127.0.0.1:" + std::to_string(port);
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
  lk::worker::Engine& decode = s.decode->engine();
  const pb::KvLayout ours = lk::worker::TransferLayout(
      lk::worker::GroupKvShapes(decode.kv_shapes(), d), decode.kv_dtype(), d);
  double local_s = 0, remote_s = 0, bytes = 0;
  for (auto _ : state) {
    lk::worker::GenerationRequest local;
    local.id = "local";
    local.prompt = prompt;
    local.max_new_tokens = 1;
    local_s += lk::bench::RunToEnd(s.prefill->engine(), std::move(local));
    const auto t0 = std::chrono::steady_clock::now();
    auto r = lk::worker::CallPrefill(s.address, req, ours, absl::Seconds(60));
    if (!r.ok() || r->kv == nullptr) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    lk::worker::GenerationRequest im;
    im.id = "decode";
    im.prompt = prompt;
    im.max_new_tokens = 1;
    im.import_kv = r->kv;
    im.import_first_token = r->first_token;
    lk::bench::RunToEnd(decode, std::move(im));
    const double t =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    remote_s += t;
    state.SetIterationTime(t);
    bytes = static_cast<double>(r->kv->bytes());
  }
  if (decode.Stats().kv_import_failures > 0) {
    state.SkipWithError("an import failed (prefilled locally)");
    return;
  }
  const double it = static_cast<double>(state.iterations());
  const double relayed =
      bytes * (static_cast<double>(p - 1) / p + static_cast<double>(d - 1) / d);
  state.counters["kv_bytes_per_token"] = bytes / n;
  state.counters["group_bytes_per_token"] = relayed / n;
  state.counters["local_prefill_ms"] = 1e3 * local_s / it;
  state.counters["remote_ms"] = 1e3 * remote_s / it;
  state.counters["overhead_us_per_token"] = 1e6 * (remote_s - local_s) / it / n;
  state.counters["overhead_vs_local"] = (remote_s - local_s) / local_s;
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
