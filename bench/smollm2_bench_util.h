// What the benchmarks on the real SmolLM2-135M-Instruct share: where
// ../shared is (--shared=DIR, default the build's), the Q4_1 GGUF loaded
// once, and a main that reads --shared before Google Benchmark's flags.
#ifndef LATENTKV_BENCH_SMOLLM2_BENCH_UTIL_H_
#define LATENTKV_BENCH_SMOLLM2_BENCH_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "model/weights.h"

namespace latentkv::bench {

inline std::string& SharedDir() {
  static std::string dir = LATENTKV_SHARED_DIR;
  return dir;
}

inline std::string SmolLm2GgufPath() {
  return SharedDir() +
         "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// Loaded once (weights stay Q4_1); aborts when the file does not load.
inline std::shared_ptr<const model::ModelWeights> SmolLm2Weights() {
  static std::shared_ptr<const model::ModelWeights> w = [] {
    auto m = model::LoadModel(SmolLm2GgufPath(), {});
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
      std::abort();
    }
    return std::shared_ptr<const model::ModelWeights>(std::move(*m));
  }();
  return w;
}

// main(): --shared=DIR, then Google Benchmark.
inline int RunBenchmarks(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--shared=", 9) == 0) SharedDir() = argv[i] + 9;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace latentkv::bench

#endif  // LATENTKV_BENCH_SMOLLM2_BENCH_UTIL_H_
