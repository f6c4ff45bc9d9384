// Kernel benchmarks: MatMul f32 (OpenBLAS) vs bf16 (AVX-512) at decode (n=1)
// and prefill (n=64) shapes, against the machine's read bandwidth (the
// roofline of batch-1 decode). Counters: bytes_per_second = weight bytes read
// per second; FLOPS = 2 * n * rows * cols per second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/internal.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// Which MatMul path a benchmark runs.
enum Path : int64_t { kF32 = 0, kBf16 = 1, kBf16Dp = 2, kF16 = 3 };

void BM_MatMul(benchmark::State& state) {
  const auto path = static_cast<Path>(state.range(0));
  const int64_t rows = state.range(1);
  const int64_t cols = state.range(2);
  const int64_t n = state.range(3);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> wf(rows * cols), x(n * cols), y(n * rows);
  for (float& f : wf) f = dist(rng);
  for (float& f : x) f = dist(rng);
  const DType dtype = path == kF32   ? DType::kF32
                      : path == kF16 ? DType::kF16
                                     : DType::kBF16;
  std::vector<uint16_t> w16(rows * cols);
  if (dtype != DType::kF32) {
    ConvertFromF32(wf.data(), wf.size(), dtype, w16.data());
  }
  const WeightView view{
      dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data(),
      dtype, rows, cols};
  if (path == kBf16Dp && !internal::CpuHasAvx512Bf16()) {
    state.SkipWithError("no AVX-512 BF16");
    return;
  }
  for (auto _ : state) {
    if (path == kBf16Dp) {
      internal::MatMulBf16Avx512Dp(x.data(), n, w16.data(), rows, cols,
                                   y.data());
    } else {
      MatMul(x.data(), n, view, y.data());
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * DTypeSize(dtype));
  state.counters["FLOPS"] = benchmark::Counter(
      2.0 * n * rows * cols * state.iterations(), benchmark::Counter::kIsRate);
  static const char* kNames[] = {"f32", "bf16", "bf16dp", "f16"};
  state.SetLabel(kNames[path]);
}

void MatMulArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"path", "rows", "cols", "n"});
  for (int64_t path : {kF32, kBf16, kBf16Dp}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{768, 768},
                              {2048, 768},
                              {768, 2048},
                              {32000, 768}}) {
      b->Args({path, rows, cols, 1});
    }
    b->Args({path, 2048, 768, 64});
  }
  // f16 is the portable path: one decode and one prefill shape.
  b->Args({kF16, 2048, 768, 1});
  b->Args({kF16, 2048, 768, 64});
  // The tiny llama2.c model (dim 64, hidden 172, vocab 512): per-op cost.
  for (int64_t path : {kF32, kBf16}) {
    b->Args({path, 64, 64, 1});
    b->Args({path, 172, 64, 1});
    b->Args({path, 512, 64, 1});
  }
}
BENCHMARK(BM_MatMul)->Apply(MatMulArgs)->UseRealTime();

// An f32 (OpenBLAS threads) and a bf16 (OpenMP threads) product back to back,
// as in a model mixing both: shows whether the two thread pools get in each
// other's way (compare with the sum of the two separate rows).
void BM_MixedF32ThenBf16(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> wf(rows * cols), x(cols), y(rows);
  for (float& f : wf) f = dist(rng);
  for (float& f : x) f = dist(rng);
  std::vector<uint16_t> wb(wf.size());
  ConvertFromF32(wf.data(), wf.size(), DType::kBF16, wb.data());
  for (auto _ : state) {
    MatMul(x.data(), 1, WeightView{wf.data(), DType::kF32, rows, cols},
           y.data());
    MatMul(x.data(), 1, WeightView{wb.data(), DType::kBF16, rows, cols},
           y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 6);
}
BENCHMARK(BM_MixedF32ThenBf16)
    ->Args({768, 2048})
    ->Args({2048, 768})
    ->UseRealTime();

// Streaming read bandwidth of 512 MiB with 2 threads (the roofline).
void BM_ReadBandwidth(benchmark::State& state) {
  double bw = 0.0;
  for (auto _ : state) {
    bw = MeasureReadBandwidth(int64_t{512} << 20,
                              static_cast<int>(state.range(0)));
  }
  state.counters["bytes_per_second"] = bw;
}
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->Iterations(1)->UseRealTime();

}  // namespace
}  // namespace latentkv::kernels

BENCHMARK_MAIN();
