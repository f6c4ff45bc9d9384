// n samples of one prompt arriving together (OpenAI's n, or a burst with a
// common prompt): the real SmolLM2-135M-Instruct (Q4_1 GGUF) on the engine,
// 8 requests with the same 512-token prompt and 16 new tokens each, with
// prompt sharing (the default: the local prefix cache on, the 7 followers
// wait for the first's prompt and share its pages) against the prefix cache
// off (every request prefills the prompt), measured in the same run.
//
// Counters: ms (wall time until all 8 finish), prefill_tokens (prompt
// tokens computed), vs_unshared (time with sharing over time without).
//
// Usage: prompt_sharing_bench [--shared=DIR] [benchmark flags]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/smollm2_bench_util.h"
#include "benchmark/benchmark.h"
#include "model/weights.h"
#include "worker/engine/engine_core.h"

namespace lk = latentkv;
namespace lw = latentkv::worker;

namespace {

double g_unshared_s = 0;

std::shared_ptr<const lk::model::ModelWeights> Weights() {
  return lk::bench::SmolLm2Weights();
}

// Seconds until 8 requests of one 512-token prompt finish; prompt tokens
// computed in *prefilled.
double Run(bool sharing, int64_t* prefilled) {
  lw::EngineOptions o;
  o.prefix_caching = sharing;
  auto core =
      lw::EngineCore::Create(Weights(), lk::kernels::MakeCpuBackend(), o);
  if (!core.ok()) std::abort();
  std::vector<int32_t> prompt = {1};
  for (int i = 1; i < 512; ++i) prompt.push_back(100 + (i * 37) % 20000);
  constexpr int kRequests = 8;
  int done = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int s = 0; s < kRequests; ++s) {
    lw::GenerationRequest r;
    r.id = "r" + std::to_string(s);
    r.prompt = prompt;
    r.max_new_tokens = 16;
    r.ignore_eos = true;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = s;
    auto seq = (*core)->Prepare(std::move(r));
    if (!seq.ok()) std::abort();
    (*core)->Admit(std::move(*seq), [&](const lw::GenerationEvent& ev) {
      if (ev.finish != lw::FinishReason::kNone || !ev.status.ok()) ++done;
    });
  }
  while (done < kRequests) (*core)->Step();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  *prefilled = int64_t{kRequests} * 512 - (*core)->Stats().prefix_hit_tokens;
  return secs;
}

void BM_EightSamples(benchmark::State& state) {
  const bool sharing = state.range(0) != 0;
  double secs = 0;
  int64_t prefilled = 0;
  for (auto _ : state) {
    secs = Run(sharing, &prefilled);
    state.SetIterationTime(secs);
  }
  state.counters["ms"] = secs * 1e3;
  state.counters["prefill_tokens"] = static_cast<double>(prefilled);
  if (!sharing) {
    g_unshared_s = secs;
  } else if (g_unshared_s > 0) {
    state.counters["vs_unshared"] = secs / g_unshared_s;
  }
  state.SetLabel(sharing ? "shared prompt" : "prefix cache off");
}

}  // namespace

// Unshared first: its time is the baseline of the shared run.
BENCHMARK(BM_EightSamples)
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  return latentkv::bench::RunBenchmarks(argc, argv);
}
