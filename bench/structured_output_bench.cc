// The cost of structured output per decode step: the engine (EngineCore,
// stepped on this thread) generating 64 tokens for 1 and 8 streams of the
// real SmolLM2-135M-Instruct (Q4_1 GGUF, vocabulary 49,152) with and without
// a JSON-schema constraint (llguidance), greedy and sampled. The schema (an
// array of at least 100 short strings) cannot complete within 64 tokens, so
// every case generates the same number of tokens.
//
// Counters: ms_per_token (wall time per generated token per stream), and
// vs_unconstrained: the constrained case's time per token over the same
// streams' and temperature's unconstrained run in this process (the greedy
// baseline takes the backend's argmax; a constrained greedy row is masked and
// chosen on the host). BM_Mask: llguidance's mask alone, per token, along a
// walk through the same schema.
//
// Usage: structured_output_bench [--shared DIR] [benchmark flags]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "worker/engine/engine_core.h"
#include "worker/grammar/llguidance_compiler.h"

namespace lk = latentkv;
namespace lw = latentkv::worker;

namespace {

std::string g_shared = LATENTKV_SHARED_DIR;
std::map<std::string, double> g_base;  // streams/temperature -> s per token

constexpr char kSchema[] =
    R"({"type":"array","items":{"type":"string","maxLength":12},)"
    R"("minItems":100})";

std::string GgufPath() {
  return g_shared +
         "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::shared_ptr<const lk::model::ModelWeights> Weights() {
  static std::shared_ptr<const lk::model::ModelWeights> w = [] {
    auto m = lk::model::LoadModel(GgufPath(), {});
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
      std::abort();
    }
    return std::shared_ptr<const lk::model::ModelWeights>(std::move(*m));
  }();
  return w;
}

const lw::LlguidanceCompiler* Compiler() {
  static std::unique_ptr<lw::LlguidanceCompiler> c = [] {
    auto made = lw::LlguidanceCompiler::CreateForModel(GgufPath(),
                                                       Weights()->config, "");
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
      std::abort();
    }
    return std::move(*made);
  }();
  return c.get();
}

// Seconds per generated token per stream for `streams` requests of 64
// tokens, generated together.
double Run(int streams, float temperature, bool constrained) {
  lw::EngineOptions o;
  o.prefix_caching = false;
  auto core =
      lw::EngineCore::Create(Weights(), lk::kernels::MakeCpuBackend(), o);
  if (!core.ok()) std::abort();
  int done = 0;
  int64_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int s = 0; s < streams; ++s) {
    lw::GenerationRequest r;
    r.id = "s" + std::to_string(s);
    r.prompt = {1, 4093, 28, 260, 1345, 282, 5646, 30};  // a short prompt
    r.max_new_tokens = 64;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.seed = 7 + s;
    if (constrained) {
      auto c = Compiler()->Compile({lw::ConstraintKind::kJsonSchema, kSchema});
      if (!c.ok()) std::abort();
      r.constraint = std::move(*c);
    }
    auto seq = (*core)->Prepare(std::move(r));
    if (!seq.ok()) std::abort();
    (*core)->Admit(std::move(*seq), [&](const lw::GenerationEvent& ev) {
      if (ev.token >= 0) ++tokens;
      if (ev.finish != lw::FinishReason::kNone || !ev.status.ok()) ++done;
    });
  }
  while (done < streams) (*core)->Step();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (tokens != int64_t{64} * streams) {
    std::fprintf(stderr, "generated %lld tokens, want %d\n",
                 static_cast<long long>(tokens), 64 * streams);
    std::abort();
  }
  return secs / 64;
}

void BM_Decode(benchmark::State& state) {
  const int streams = static_cast<int>(state.range(0));
  const float temperature = state.range(1) == 0 ? 0.0f : 1.0f;
  const bool constrained = state.range(2) != 0;
  double per_token = 0;
  for (auto _ : state) {
    per_token = Run(streams, temperature, constrained);
    state.SetIterationTime(per_token * 64);
  }
  state.counters["ms_per_token"] = per_token * 1e3;
  const std::string key =
      std::to_string(streams) + "/" + std::to_string(state.range(1));
  if (!constrained) {
    g_base[key] = per_token;
  } else if (g_base.count(key)) {
    state.counters["vs_unconstrained"] = per_token / g_base[key];
  }
  state.SetLabel(std::string(constrained ? "json_schema" : "none") +
                 (temperature > 0 ? " t=1" : " greedy"));
}

// llguidance's mask alone, per token, along a walk through the schema that
// takes the lowest allowed non-EOS token each step.
void BM_Mask(benchmark::State& state) {
  int64_t masks = 0;
  double mask_secs = 0;
  for (auto _ : state) {
    auto c = Compiler()->Compile({lw::ConstraintKind::kJsonSchema, kSchema});
    if (!c.ok()) std::abort();
    std::vector<uint32_t> m((*c)->mask_words());
    for (int step = 0; step < 64; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!(*c)->FillMask(absl::MakeSpan(m)).ok()) std::abort();
      mask_secs +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      ++masks;
      int32_t pick = -1;
      for (size_t w = 0; w < m.size() && pick < 0; ++w) {
        if (m[w] != 0)
          pick = static_cast<int32_t>(w * 32 + __builtin_ctz(m[w]));
      }
      if (pick < 0 || !(*c)->Accept(pick).ok()) break;
    }
  }
  state.counters["us_per_mask"] = mask_secs / masks * 1e6;
}

}  // namespace

// One unmeasured run first: page faults and caches warm for every case.
void BM_Warmup(benchmark::State& state) {
  for (auto _ : state) Run(1, 0.0f, false);
}

BENCHMARK(BM_Warmup)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mask)->Unit(benchmark::kMillisecond);
// streams, temperature (0 greedy / 1), constrained
BENCHMARK(BM_Decode)
    ->ArgsProduct({{1, 8}, {0, 1}, {0, 1}})
    ->UseManualTime()
    ->Iterations(4)
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--shared=", 9) == 0) g_shared = argv[i] + 9;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
