// Prefill throughput of the engine (one prompt of 128, 512 or 2048 tokens,
// one token generated) on real models as served: SmolLM2-135M-Instruct's
// Q4_1 GGUF from ../shared (weights kept Q4_1), the same requantized to
// q8_0 at load (LoadOptions::matrix_dtype, as --weights-dtype) and
// converted to f32 (packed into panels, the dense baseline), and
// Gemma-3-270M Q4_K_M when tools/fetch_models.sh has fetched it (else the
// case reports that it was skipped). Activations are f32 throughout
// (EngineOptions as served); `activations=q8` rows quantize them per block
// of 32 to int8 for the quantized weights (kernels::SetActivationQuant).
//
// Roofline: the f32 multiply-add peak of 2 threads (MeasureComputePeak),
// measured at start and right after each case (the higher is kept: the
// shared VM drifts). Counters: tok_s (prompt tokens/s: the prompt over the
// time from Submit to the first token), gflop_per_token (2 x matrix
// elements per token + attention's QK and PV products at the mean context,
// sliding windows counted), gflops, frac_f32_peak (gflops over the f32
// peak), vs_q4_1 / vs_f32 (tok/s over the same prompt length's q4_1 / f32
// case of this run).
//
// Usage: prefill_bench [--shared=DIR] [benchmark flags]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "bench/smollm2_bench_util.h"
#include "common/fetched_models.h"
#include "kernels/ops.h"
#include "model/weights.h"
#include "worker/engine/engine.h"

namespace lk = latentkv;

namespace {

double g_peak = 0;                      // f32 FLOP/s, 2 threads
std::map<std::string, double> g_tok_s;  // "<dtype>/<len>" -> tok/s

struct Case {
  std::string model;                  // "smollm2" | "gemma3"
  std::optional<lk::DType> matrices;  // unset: as the file stores them
  bool q8_activations;
};

// Weights by (model, dtype), loaded once per process.
std::shared_ptr<const lk::model::ModelWeights> Weights(const Case& c,
                                                       std::string* error) {
  static std::map<std::string, std::shared_ptr<const lk::model::ModelWeights>>
      cache;
  const std::string key =
      c.model + "/" +
      (c.matrices ? std::string(lk::DTypeName(*c.matrices)) : "stored");
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const std::string path =
      c.model == "gemma3" ? lk::FetchedModelPath("gemma-3-270m-q4_k_m.gguf")
                          : lk::bench::SmolLm2GgufPath();
  lk::model::LoadOptions lo;
  lo.matrix_dtype = c.matrices;
  auto w = lk::model::LoadModel(path, lo);
  if (!w.ok()) {
    *error = w.status().ToString() +
             (c.model == "gemma3" ? " (run tools/fetch_models.sh)" : "");
    return nullptr;
  }
  return cache[key] =
             std::shared_ptr<const lk::model::ModelWeights>(std::move(*w));
}

// 2 x multiply-adds per prompt token: every layer's matrices, attention's
// QK and PV products at each position's context (window-bounded), and the
// LM head once per prompt.
double FlopsPerToken(const lk::model::ModelWeights& w, int len) {
  const lk::model::ModelConfig& c = w.config;
  double macs = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    const auto& lw = w.layers[l];
    for (const auto* t : {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.o_proj,
                          &lw.gate_proj, &lw.up_proj, &lw.down_proj}) {
      macs += static_cast<double>(t->shape[0]) * t->shape.back();
    }
    const int window = c.sliding_window.empty() ? 0 : c.sliding_window[l];
    double ctx = 0;
    for (int p = 0; p < len; ++p)
      ctx += window > 0 ? std::min(p + 1, window) : p + 1;
    macs += ctx / len * c.num_heads * (c.qk_head_dim[l] + c.vo_head_dim[l]);
  }
  macs +=
      static_cast<double>(w.lm_head.shape[0]) * w.lm_head.shape.back() / len;
  return 2 * macs;
}

void BM_Prefill(benchmark::State& state, Case c) {
  const int len = static_cast<int>(state.range(0));
  std::string error;
  auto weights = Weights(c, &error);
  if (weights == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  lk::worker::EngineOptions eo;
  eo.kv.max_bytes = int64_t{1} << 30;
  eo.prefix_caching = false;  // every iteration computes its whole prompt
  lk::kernels::BackendOptions bo;
  bo.cpu_activations = c.q8_activations ? lk::kernels::ActivationQuant::kQ8
                                        : lk::kernels::ActivationQuant::kF32;
  auto backend = lk::kernels::CreateBackend("cpu", bo);
  if (!backend.ok()) {
    state.SkipWithError(backend.status().ToString().c_str());
    return;
  }
  auto engine = lk::worker::Engine::Create(weights, std::move(*backend), eo);
  if (!engine.ok()) {
    state.SkipWithError(engine.status().ToString().c_str());
    return;
  }
  double seconds = 0;
  int64_t tokens = 0;
  int run = 0;
  for (auto _ : state) {
    lk::worker::GenerationRequest r;
    r.id = std::to_string(run);
    for (int i = 0; i < len; ++i) {
      r.prompt.push_back(100 + (13 * i + 7 * run) % 20000);
    }
    r.max_new_tokens = 1;
    r.ignore_eos = true;
    std::promise<void> done;
    const auto start = std::chrono::steady_clock::now();
    auto sink = [&done](const lk::worker::GenerationEvent& e) {
      if (e.finish != lk::worker::FinishReason::kNone || !e.status.ok()) {
        done.set_value();
      }
    };
    if (!(*engine)->Submit(std::move(r), sink).ok()) {
      state.SkipWithError("submit failed");
      break;
    }
    done.get_future().wait();
    seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    tokens += len;
    ++run;
  }
  if (tokens == 0) return;
  const double tok_s = tokens / seconds;
  const double flops = FlopsPerToken(*weights, len);
  const double peak = std::max(g_peak, lk::kernels::MeasureComputePeak(2));
  const std::string dtype(lk::DTypeName(weights->layers[0].q_proj.dtype));
  const std::string key = c.model + "/" + dtype +
                          (c.q8_activations ? "/q8act/" : "/") +
                          std::to_string(len);
  g_tok_s[key] = tok_s;
  state.counters["tok_s"] = tok_s;
  state.counters["gflop_per_token"] = flops / 1e9;
  state.counters["gflops"] = tok_s * flops / 1e9;
  state.counters["frac_f32_peak"] = tok_s * flops / peak;
  state.counters["f32_peak_gflops"] = peak / 1e9;
  for (const char* base : {"q4_1", "f32"}) {
    const std::string k = c.model + "/" + base + "/" + std::to_string(len);
    if (k != key && g_tok_s.count(k)) {
      state.counters[std::string("vs_") + base] = tok_s / g_tok_s[k];
    }
  }
  if (c.q8_activations) {
    const std::string k = c.model + "/" + dtype + "/" + std::to_string(len);
    if (g_tok_s.count(k)) state.counters["vs_f32_act"] = tok_s / g_tok_s[k];
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_peak = lk::kernels::MeasureComputePeak(2);
  std::printf("measured f32 FMA peak (2 threads): %.1f GFLOP/s\n",
              g_peak / 1e9);
  const std::vector<Case> cases = {
      {"smollm2", std::nullopt, false},    {"smollm2", lk::DType::kQ8_0, false},
      {"smollm2", lk::DType::kF32, false}, {"smollm2", std::nullopt, true},
      {"smollm2", lk::DType::kQ8_0, true}, {"gemma3", std::nullopt, false},
      {"gemma3", std::nullopt, true},
  };
  for (const Case& c : cases) {
    const std::string name =
        "Prefill/" + c.model + "/" +
        (c.matrices ? std::string(lk::DTypeName(*c.matrices))
                    : std::string("as_stored")) +
        (c.q8_activations ? "/activations=q8" : "/activations=f32");
    auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Prefill, c);
    b->ArgName("prompt")->UseRealTime()->Unit(benchmark::kMillisecond);
    for (int len : {128, 512, 2048}) b->Arg(len);
    b->Iterations(2);
  }
  return lk::bench::RunBenchmarks(argc, argv);
}
