// Decode GEMV (one input, y[N] = x[K] W^T, W [N, K]) over the q5_0 / q5_1
// and k-quant weights against f32 (row-major and the panels the engine packs
// f32 into on AVX2 CPUs), q8_0, q4_0 and q4_1, on Gemma-3-270M's shapes:
// gate/up 2048 x 640, down 640 x 2048, o_proj 640 x 1024, LM head
// 262144 x 640 (q8_0 in the downloaded file). The k-quants need K % 256 == 0,
// so the K = 640 shapes have none (llama.cpp stores those tensors as q5_0 /
// q8_0 for the same reason). Weights stream from DRAM as in decode: each
// benchmark cycles through copies of its matrix (>= 256 MiB in all).
// Counters: bytes_per_second (weight bytes read), frac_of_probe (of the read
// bandwidth probe in the same run). After the runs, a table gives products
// per second per dtype and shape (the best of --benchmark_repetitions) with
// the ratio to f32 panels (the engine's f32 path; "tok/s-like": a decode
// token is a sum of such products) and to q8_0, all measured in the same
// process.
//
//   build/bench/kquant_bench --benchmark_min_time=0.3 --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// A dtype index, or kF32Panels (f32 packed into panels, as the engine runs
// f32 matrices on AVX2 CPUs without AVX-512).
constexpr int64_t kF32Panels = 100;

const DType kDTypes[] = {DType::kF32,  DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                         DType::kQ5_0, DType::kQ5_1, DType::kQ2_K, DType::kQ3_K,
                         DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

std::string PathName(int64_t path) {
  if (path == kF32Panels) return "f32 panels";
  return std::string(DTypeName(static_cast<DType>(path)));
}

// Seconds per product by (rows x cols, path name), for the closing table.
std::map<std::pair<int64_t, int64_t>, std::map<std::string, double>>&
Results() {
  static auto* r = new std::map<std::pair<int64_t, int64_t>,
                                std::map<std::string, double>>();
  return *r;
}

void BM_Gemv(benchmark::State& state) {
  const int64_t path = state.range(0), rows = state.range(1),
                cols = state.range(2);
  const bool panels = path == kF32Panels;
  const DType dtype = panels ? DType::kF32 : static_cast<DType>(path);
  if (cols % DTypeBlockElems(dtype) != 0) {
    state.SkipWithError("K is not whole blocks of this dtype");
    return;
  }
  const int64_t bytes = rows * DTypeRowBytes(dtype, cols);
  const int64_t copies =
      std::max<int64_t>(1, ((int64_t{256} << 20) + bytes - 1) / bytes);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> x(cols), y(rows);
  for (float& f : x) f = dist(rng);
  // One matrix quantized (or packed), then copied: weights of Gaussian
  // values as trained weights roughly are.
  std::vector<float> f(rows * cols);
  for (float& v : f) v = dist(rng);
  const WeightView src{f.data(), DType::kF32, rows, cols};
  const int64_t stored = panels ? PanelBytes(src) : bytes;
  // Buffers with a 32-byte aligned start (the panel kernels need it).
  std::deque<std::vector<uint8_t>> store;
  auto buffer = [&] {
    store.emplace_back(stored + 32);
    const auto a = reinterpret_cast<uintptr_t>(store.back().data());
    return reinterpret_cast<uint8_t*>((a + 31) / 32 * 32);
  };
  std::vector<WeightView> views;
  WeightView w{buffer(), dtype, rows, cols};
  if (panels) {
    w = PackPanels(src, const_cast<void*>(w.data));
  } else {
    ConvertFromF32(f.data(), rows * cols, dtype, const_cast<void*>(w.data));
  }
  f.clear();
  f.shrink_to_fit();
  views.push_back(w);
  for (int64_t i = 1; i < copies; ++i) {
    uint8_t* p = buffer();
    const auto* from = static_cast<const uint8_t*>(w.data);
    std::copy(from, from + stored, p);
    WeightView v = w;
    v.data = p;
    views.push_back(v);
  }
  static const double probe = MeasureReadBandwidth(int64_t{512} << 20, 2);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (const WeightView& v : views) MatMul(x.data(), 1, v, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double products = static_cast<double>(state.iterations()) * copies;
  state.SetBytesProcessed(static_cast<int64_t>(products * bytes));
  state.counters["frac_of_probe"] = products * bytes / secs / probe;
  state.counters["probe_GBs"] = probe / 1e9;
  state.counters["us_per_product"] = 1e6 * secs / products;
  state.SetLabel(PathName(path));
  // The best of the repetitions (--benchmark_repetitions) for the table.
  auto [it, fresh] =
      Results()[{rows, cols}].try_emplace(PathName(path), secs / products);
  if (!fresh) it->second = std::min(it->second, secs / products);
}

void GemvArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"path", "rows", "cols"});
  const std::pair<int64_t, int64_t> shapes[] = {
      {2048, 640}, {640, 2048}, {640, 1024}, {262144, 640}};
  for (auto [rows, cols] : shapes) {
    b->Args({kF32Panels, rows, cols});
    for (DType d : kDTypes) {
      if (cols % DTypeBlockElems(d) != 0) continue;
      b->Args({static_cast<int64_t>(d), rows, cols});
    }
  }
}
BENCHMARK(BM_Gemv)->Apply(GemvArgs)->UseRealTime();

// Prefill / batch products (x [n, K] W^T, W [N, K] = 1536 x 768, cache
// resident: compute-bound) with f32 and with int8 activations
// (ActivationQuant::kQ8), against f32 panels and the f32 FMA peak of the
// same threads. Counters: gflops, frac_f32_peak, vs_f32_act (the same
// weights with f32 activations, this run).
std::map<std::string, double>& GemmSeconds() {
  static auto* r = new std::map<std::string, double>();
  return *r;
}

void BM_Gemm(benchmark::State& state) {
  const int64_t path = state.range(0), q8 = state.range(1), n = state.range(2);
  constexpr int64_t rows = 1536, cols = 768;
  const bool panels = path == kF32Panels;
  const DType dtype = panels ? DType::kF32 : static_cast<DType>(path);
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> f(rows * cols), x(n * cols), y(n * rows);
  for (float& v : f) v = dist(rng);
  for (float& v : x) v = dist(rng);
  std::vector<float> packed(
      PanelBytes({f.data(), DType::kF32, rows, cols}) / 4 + 8);
  std::vector<uint8_t> q(rows * DTypeRowBytes(dtype, cols));
  WeightView w{q.data(), dtype, rows, cols};
  if (panels) {
    const auto a = reinterpret_cast<uintptr_t>(packed.data());
    w = PackPanels({f.data(), DType::kF32, rows, cols},
                   reinterpret_cast<void*>((a + 31) / 32 * 32));
  } else {
    ConvertFromF32(f.data(), rows * cols, dtype, q.data());
  }
  MatMulOptions o;
  if (q8 != 0) o.activations = ActivationQuant::kQ8;
  static const double peak = MeasureComputePeak(2);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    MatMul(x.data(), n, w, y.data(), o);
    benchmark::DoNotOptimize(y.data());
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count() /
      state.iterations();
  const double flops = 2.0 * n * rows * cols;
  state.counters["gflops"] = flops / secs / 1e9;
  state.counters["frac_f32_peak"] = flops / secs / peak;
  const std::string name = PathName(path) + (q8 != 0 ? " q8" : "");
  state.SetLabel(name);
  const std::string key = PathName(path) + "/" + std::to_string(n);
  if (q8 == 0) {
    GemmSeconds()[key] = secs;
  } else if (GemmSeconds().count(key)) {
    state.counters["vs_f32_act"] = GemmSeconds()[key] / secs;
  }
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"path", "q8", "n"})
    ->ArgsProduct({{kF32Panels, static_cast<int64_t>(DType::kQ8_0),
                    static_cast<int64_t>(DType::kQ4_0),
                    static_cast<int64_t>(DType::kQ4_1),
                    static_cast<int64_t>(DType::kQ4_K),
                    static_cast<int64_t>(DType::kQ6_K)},
                   {0, 1},
                   {8, 64, 512}})
    ->UseRealTime();

void PrintTable() {
  std::printf(
      "\nGEMV n = 1, weights streamed from DRAM: products/s, and the ratio "
      "to f32 panels and to q8_0 (same run)\n");
  std::printf("%-14s %-11s %12s %10s %9s %8s\n", "shape (NxK)", "dtype",
              "products/s", "GB/s", "vs f32", "vs q8_0");
  for (const auto& [shape, by] : Results()) {
    const auto f32 = by.find("f32 panels");
    const auto q8 = by.find("q8_0");
    for (const auto& [name, secs] : by) {
      const std::optional<DType> d =
          name == "f32 panels" ? DType::kF32 : *ParseDType(name);
      const double bytes =
          static_cast<double>(shape.first) * DTypeRowBytes(*d, shape.second);
      std::printf("%6lldx%-7lld %-11s %12.0f %10.1f %9.2f %8.2f\n",
                  static_cast<long long>(shape.first),
                  static_cast<long long>(shape.second), name.c_str(),
                  1.0 / secs, bytes / secs / 1e9,
                  f32 == by.end() ? 0.0 : f32->second / secs,
                  q8 == by.end() ? 0.0 : q8->second / secs);
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  latentkv::kernels::PrintTable();
  return 0;
}
