// Prefill -> decode KV transfer on CPU: bytes and time per request with full
// head dims vs KV-Latent 50% / 25%, each without and with SpindleKV (its
// default plan: the shallow layers as codebooks, the others evicted to the
// prompt budget; both sides use it and the KV moves compressed), through the
// real Worker.Prefill RPC on loopback (in-process gRPC server + client), next
// to a local prefill of the same prompt measured in the same iteration (the
// baseline): overhead_ms = remote (prefill + export + stream + import) - local
// prefill.
//
// Model: a synthetic 4-layer, 8-head, head-dim-64 Llama (hidden 512, random
// weights); the latent variants set d_qk = d_vo = 32 / 16 in config.json.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "bench/transfer_bench_util.h"
#include "grpcpp/grpcpp.h"
#include "kernels/backend.h"
#include "model/convert.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/engine.h"
#include "worker/server/kv_transfer.h"
#include "worker/server/worker_service.h"

namespace lk = latentkv;
namespace pb = ::latentkv::v1;

namespace {

struct Setup {
  std::shared_ptr<const lk::model::ModelWeights> weights;
  std::unique_ptr<lk::worker::Engine> prefill, local, decode;
  std::unique_ptr<lk::worker::WorkerService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

Setup& Get(int dim, bool spindle) {
  static std::map<std::pair<int, bool>, std::unique_ptr<Setup>> setups;
  auto& s = setups[{dim, spindle}];
  if (s) return *s;
  s = std::make_unique<Setup>();
  char tmpl[] = "/tmp/latentkv-transfer-bench-XXXXXX";
  const std::string dir = std::string(mkdtemp(tmpl)) + "/m";
  lk::model::ModelConfig c =
      lk::model::ModelConfig::Llama(512, 1376, 4, 8, 8, 4096, 2048);
  c.qk_head_dim.assign(4, dim);
  c.vo_head_dim.assign(4, dim);
  if (!lk::model::WriteSyntheticModel(c, dir, lk::DType::kF32, 1).ok()) {
    std::abort();
  }
  s->weights = std::move(*lk::model::LoadModel(dir));
  lk::worker::EngineOptions o;
  o.kv.max_bytes = int64_t{512} << 20;
  o.scheduler.max_step_tokens = 2048;
  if (spindle) o.residency.policy = "spindle";
  // Every iteration sends the same prompt: without this the local prefix
  // cache would serve it from the second iteration on.
  o.prefix_caching = false;
  auto make = [&] {
    return std::move(*lk::worker::Engine::Create(
        s->weights, lk::kernels::MakeCpuBackend(), o));
  };
  s->prefill = make();
  s->local = make();
  s->decode = make();
  s->service = std::make_unique<lk::worker::WorkerService>(s->prefill.get());
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.SetMaxSendMessageSize(256 << 20);
  b.RegisterService(s->service.get());
  s->server = b.BuildAndStart();
  s->address = "127.0.0.1:" + std::to_string(port);
  return *s;
}

// One local prefill (first token); seconds.
double LocalPrefill(lk::worker::Engine& e, const std::vector<int32_t>& prompt) {
  lk::worker::GenerationRequest r;
  r.id = "local";
  r.prompt = prompt;
  r.max_new_tokens = 1;
  r.ignore_eos = true;
  return lk::bench::RunToEnd(e, std::move(r));
}

void BM_PrefillTransfer(benchmark::State& state) {
  const int dim = static_cast<int>(state.range(0));
  const int n = static_cast<int>(state.range(1));
  const bool spindle = state.range(2) != 0;
  Setup& s = Get(dim, spindle);
  const std::vector<int32_t> prompt = lk::bench::SyntheticPrompt(n);
  pb::PrefillRequest req;
  req.set_request_id("bench");
  for (int32_t t : prompt) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_tokens(1);
  req.mutable_sampling()->set_ignore_eos(true);
  req.set_accepts_codebooks(true);
  const pb::KvLayout ours = lk::worker::TransferLayout(s.decode->kv_shapes(),
                                                       s.decode->kv_dtype(), 1);
  double local_s = 0, remote_s = 0, bytes = 0, codebook_bytes = 0;
  for (auto _ : state) {
    local_s += LocalPrefill(*s.local, prompt);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = lk::worker::CallPrefill(s.address, req, ours, absl::Seconds(60));
    if (!r.ok() || r->kv == nullptr) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    // Import into a decode-side cache, as the decode worker does.
    lk::worker::GenerationRequest d;
    d.id = "decode";
    d.prompt = prompt;
    d.max_new_tokens = 1;
    d.import_kv = r->kv;
    d.import_first_token = r->first_token;
    lk::bench::RunToEnd(*s.decode, std::move(d));
    const double t =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    remote_s += t;
    state.SetIterationTime(t);
    bytes = static_cast<double>(r->kv->bytes());
    codebook_bytes = 0;
    for (const auto& layer : r->kv->codebooks) {
      for (const std::string& b : layer) codebook_bytes += b.size();
    }
  }
  const double it = static_cast<double>(state.iterations());
  const double full = static_cast<double>(n) * 4 * 8 * (1 + 64 + 64) * 4;
  state.counters["kv_bytes"] = bytes;
  state.counters["codebook_bytes"] = codebook_bytes;
  state.counters["full_dim_bytes"] = full;
  state.counters["bytes_vs_full"] = bytes / full;
  state.counters["local_prefill_ms"] = 1e3 * local_s / it;
  state.counters["remote_ms"] = 1e3 * remote_s / it;
  state.counters["overhead_ms"] = 1e3 * (remote_s - local_s) / it;
  state.counters["overhead_vs_local"] = (remote_s - local_s) / local_s;
}

BENCHMARK(BM_PrefillTransfer)
    ->ArgNames({"d", "prompt", "spindle"})
    ->ArgsProduct({{64, 32, 16}, {256, 1024}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
