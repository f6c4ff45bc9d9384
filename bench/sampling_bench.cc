// What sampling features cost per decode step: the engine (EngineCore,
// stepped on this thread) generating 64 tokens for 1 and 8 streams of the
// real SmolLM2-135M-Instruct (Q4_1 GGUF, vocabulary 49,152), greedy and
// sampled, with each feature against none:
//   BM_Constrained  a JSON-schema constraint (llguidance); the schema (an
//                   array of at least 100 short strings) cannot complete
//                   within 64 tokens, so every case generates as many
//   BM_Logprobs     logprobs with 5 alternatives per token
// Counters: ms_per_token (with the feature) and ms_per_token_plain (wall
// time per generated token per stream: one decode step), and vs_plain,
// their ratio; medians of 5 runs each, the two kinds alternating (the
// greedy baseline takes the backend's argmax; a constrained or logprobs
// greedy row is chosen on the host). BM_Mask: llguidance's mask alone, per
// token, along a walk through the same schema.
//
// Usage: sampling_bench [--shared=DIR] [benchmark flags]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/smollm2_bench_util.h"
#include "benchmark/benchmark.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "worker/engine/engine_core.h"
#include "worker/grammar/llguidance_compiler.h"

namespace lk = latentkv;
namespace lw = latentkv::worker;

namespace {

constexpr char kSchema[] =
    R"({"type":"array","items":{"type":"string","maxLength":12},)"
    R"("minItems":100})";

std::string GgufPath() { return lk::bench::SmolLm2GgufPath(); }

std::shared_ptr<const lk::model::ModelWeights> Weights() {
  return lk::bench::SmolLm2Weights();
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
enum class Feature { kNone, kJsonSchema, kLogprobs };

double Run(int streams, float temperature, Feature feature) {
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
    if (feature == Feature::kLogprobs) r.sampling.logprobs = 5;
    if (feature == Feature::kJsonSchema) {
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

// Plain runs and runs with `feature` alternate (this machine's speed drifts
// by tens of percent between runs: shared cores), and each side's median
// counts.
void Compare(benchmark::State& state, Feature feature, const char* name) {
  const int streams = static_cast<int>(state.range(0));
  const float temperature = state.range(1) == 0 ? 0.0f : 1.0f;
  constexpr int kPairs = 5;
  std::vector<double> plain, with;
  for (auto _ : state) {
    plain.clear();
    with.clear();
    for (int i = 0; i < kPairs; ++i) {
      plain.push_back(Run(streams, temperature, Feature::kNone));
      with.push_back(Run(streams, temperature, feature));
    }
    std::sort(plain.begin(), plain.end());
    std::sort(with.begin(), with.end());
    state.SetIterationTime(with[kPairs / 2] * 64);
  }
  state.counters["ms_per_token"] = with[kPairs / 2] * 1e3;
  state.counters["ms_per_token_plain"] = plain[kPairs / 2] * 1e3;
  state.counters["vs_plain"] = with[kPairs / 2] / plain[kPairs / 2];
  state.SetLabel(std::string(name) + (temperature > 0 ? " t=1" : " greedy"));
}

void BM_Constrained(benchmark::State& state) {
  Compare(state, Feature::kJsonSchema, "json_schema");
}

void BM_Logprobs(benchmark::State& state) {
  Compare(state, Feature::kLogprobs, "logprobs=5");
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
  for (auto _ : state) Run(1, 0.0f, Feature::kNone);
}

BENCHMARK(BM_Warmup)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mask)->Unit(benchmark::kMillisecond);
// streams, temperature (0 greedy / 1)
BENCHMARK(BM_Constrained)
    ->ArgsProduct({{1, 8}, {0, 1}})
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Logprobs)
    ->ArgsProduct({{1, 8}, {0, 1}})
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  return latentkv::bench::RunBenchmarks(argc, argv);
}
