// Kernel benchmarks: MatMul f32, bf16 and quantized (q8_0, q4_0, q4_1) at
// single-stream decode (n = 1), decode-batch (n = 4..64) and prefill (n = 256)
// shapes, OpenBLAS as the baseline, against the machine's read bandwidth (the
// roofline of batch-1 decode). Counters: bytes_per_second = weight bytes read
// per second; FLOPS = 2 * n * rows * cols per second.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/cpu/internal.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// Which MatMul path a benchmark runs.
enum Path : int64_t {
  kF32 = 0,
  kBf16 = 1,
  kBf16Dp = 2,
  kF16 = 3,
  kF32Blas = 4,     // OpenBLAS sgemv/sgemm on row slices: the baseline
  kF32Panels = 5,   // f32 weights packed into panels (PackPanels)
  kBf16Panels = 6,  // bf16 weights packed into panels
  kQ8_0 = 7,        // block-quantized row-major weights (kernels/cpu/quant.h)
  kQ4_0 = 8,
  kQ4_1 = 9,
};

const char* const kPathNames[] = {
    "f32",        "bf16",        "bf16dp", "f16",  "f32 OpenBLAS",
    "f32 panels", "bf16 panels", "q8_0",   "q4_0", "q4_1"};

// The weight dtype a path multiplies.
DType PathDType(Path path) {
  switch (path) {
    case kF32:
    case kF32Blas:
    case kF32Panels:
      return DType::kF32;
    case kF16:
      return DType::kF16;
    case kQ8_0:
      return DType::kQ8_0;
    case kQ4_0:
      return DType::kQ4_0;
    case kQ4_1:
      return DType::kQ4_1;
    default:
      return DType::kBF16;
  }
}

// Bytes of a [rows, cols] matrix of `dtype` (row-major).
int64_t MatrixBytes(DType dtype, int64_t rows, int64_t cols) {
  return rows * DTypeRowBytes(dtype, cols);
}

bool PathPanels(Path path) { return path == kF32Panels || path == kBf16Panels; }

// Owns random weight matrices (uniform in [-1, 1], rounded to their dtype)
// for the benchmarks' products; views stay valid while it lives.
class RandomWeights {
 public:
  explicit RandomWeights(uint32_t seed) : rng_(seed) {}
  WeightView Make(int64_t rows, int64_t cols, DType dtype) {
    std::vector<float> f(rows * cols);
    for (float& v : f) v = dist_(rng_);
    if (dtype == DType::kF32) {
      f32_.push_back(std::move(f));
      return WeightView{f32_.back().data(), dtype, rows, cols};
    }
    if (IsBlockQuantized(dtype)) {
      quant_.emplace_back(MatrixBytes(dtype, rows, cols));
      ConvertFromF32(f.data(), f.size(), dtype, quant_.back().data());
      return WeightView{quant_.back().data(), dtype, rows, cols};
    }
    b16_.emplace_back(rows * cols);
    ConvertFromF32(f.data(), f.size(), dtype, b16_.back().data());
    return WeightView{b16_.back().data(), dtype, rows, cols};
  }
  // A copy of the quantized matrix `w` (made by Make): the streamed
  // benchmarks' copies, without quantizing hundreds of MiB again.
  WeightView Clone(const WeightView& w) {
    const int64_t bytes = MatrixBytes(w.dtype, w.rows, w.cols);
    const auto* p = static_cast<const uint8_t*>(w.data);
    quant_.emplace_back(p, p + bytes);
    WeightView out = w;
    out.data = quant_.back().data();
    return out;
  }
  // The weights `path` multiplies: row-major, or packed into panels in
  // memory from the CPU backend's Allocate, as the engine does (huge pages
  // for large matrices); the row-major copy is then freed.
  WeightView MakeFor(Path path, int64_t rows, int64_t cols) {
    const WeightView w = Make(rows, cols, PathDType(path));
    if (!PathPanels(path)) return w;
    void* dst = backend_->Allocate(PanelBytes(w));
    panels_.emplace_back(dst, Free{backend_.get()});
    const WeightView packed = PackPanels(w, dst);
    if (w.dtype == DType::kF32) {
      f32_.pop_back();
    } else {
      b16_.pop_back();
    }
    return packed;
  }

 private:
  struct Free {
    Backend* backend;
    void operator()(void* p) const { backend->Free(p); }
  };
  std::unique_ptr<Backend> backend_ = MakeCpuBackend();
  std::mt19937 rng_;
  std::uniform_real_distribution<float> dist_{-1.0f, 1.0f};
  std::deque<std::vector<float>> f32_;
  std::deque<std::vector<uint16_t>> b16_;
  std::deque<std::vector<uint8_t>> quant_;
  std::deque<std::unique_ptr<void, Free>> panels_;
};

// y = x W^T through the path's entry point (MatMul, or the BLAS baseline).
void Product(Path path, const float* x, int64_t n, const WeightView& w,
             float* y) {
  if (path == kF32Blas) {
    internal::MatMulF32Blas(x, n, static_cast<const float*>(w.data), w.rows,
                            w.cols, y);
  } else {
    MatMul(x, n, w, y);
  }
}

void BM_MatMul(benchmark::State& state) {
  const auto path = static_cast<Path>(state.range(0));
  const int64_t rows = state.range(1);
  const int64_t cols = state.range(2);
  const int64_t n = state.range(3);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(n * cols), y(n * rows);
  for (float& f : x) f = dist(rng);
  const DType dtype = PathDType(path);
  RandomWeights weights(2);
  const WeightView view = weights.MakeFor(path, rows, cols);
  if (path == kBf16Dp && !internal::CpuHasAvx512Bf16()) {
    state.SkipWithError("no AVX-512 BF16");
    return;
  }
  for (auto _ : state) {
    if (path == kBf16Dp) {
      internal::MatMulBf16Avx512Dp(x.data(), n,
                                   static_cast<const uint16_t*>(view.data),
                                   rows, cols, y.data());
    } else {
      Product(path, x.data(), n, view, y.data());
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * MatrixBytes(dtype, rows, cols));
  state.counters["FLOPS"] = benchmark::Counter(
      2.0 * n * rows * cols * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(kPathNames[path]);
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
    b->Args({path, 2048, 768, 256});
  }
  // Decode batches and prefill, OpenBLAS as the baseline.
  for (int64_t path : {kF32Blas, kF32, kBf16, kF32Panels, kBf16Panels}) {
    for (int64_t n : {4, 16, 64, 256}) b->Args({path, 2048, 768, n});
  }
  // f16 is the portable path: one decode and one prefill shape.
  b->Args({kF16, 2048, 768, 1});
  b->Args({kF16, 2048, 768, 64});
  // Quantized weights next to f32 and bf16 (row-major and the panels the
  // engine serves them in on AVX2): SmolLM2-135M (576 x 1536 down, 1536 x
  // 576 gate/up, 49152 x 576 head) and stories110M (2048 x 768, 32000 x 768)
  // shapes, decode (1, 16) and prefill-like (64) inputs.
  for (int64_t path : {kF32Panels, kBf16Panels, kQ8_0, kQ4_0, kQ4_1}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{1536, 576}, {2048, 768}}) {
      for (int64_t n : {1, 16, 64}) b->Args({path, rows, cols, n});
    }
  }
  // The tiny llama2.c model (dim 64, hidden 172, vocab 512): per-op cost.
  for (int64_t path : {kF32, kBf16}) {
    b->Args({path, 64, 64, 1});
    b->Args({path, 172, 64, 1});
    b->Args({path, 512, 64, 1});
  }
}
BENCHMARK(BM_MatMul)->Apply(MatMulArgs)->UseRealTime();

// Decode's real access pattern: the weights are far larger than the caches,
// so every product streams from DRAM. Cycles through copies of one matrix
// (384 MiB of weights in all) and reports bytes/s next to the read-bandwidth
// probe measured in the same run (frac_of_probe).
void BM_MatMulStreamed(benchmark::State& state) {
  const auto path = static_cast<Path>(state.range(0));
  const int64_t rows = state.range(1);
  const int64_t cols = state.range(2);
  const int64_t n = state.range(3);
  const DType dtype = PathDType(path);
  const int64_t bytes = MatrixBytes(dtype, rows, cols);
  const int64_t copies = ((int64_t{384} << 20) + bytes - 1) / bytes;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(n * cols), y(n * rows);
  for (float& f : x) f = dist(rng);
  RandomWeights weights(4);
  std::vector<WeightView> views;
  for (int64_t i = 0; i < copies; ++i) {
    if (i > 0 && IsBlockQuantized(dtype)) {
      views.push_back(weights.Clone(views[0]));
    } else {
      views.push_back(weights.MakeFor(path, rows, cols));
    }
  }
  static const double probe = MeasureReadBandwidth(int64_t{512} << 20, 2);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (const WeightView& v : views) Product(path, x.data(), n, v, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double total = static_cast<double>(state.iterations()) * copies * bytes;
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["frac_of_probe"] = total / secs / probe;
  state.counters["probe_GBs"] = probe / 1e9;
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * n * rows * cols * copies * state.iterations(),
                         benchmark::Counter::kIsRate);
  state.SetLabel(kPathNames[path]);
}
BENCHMARK(BM_MatMulStreamed)
    ->ArgNames({"path", "rows", "cols", "n"})
    ->ArgsProduct({{kF32Blas, kF32, kBf16, kF32Panels, kBf16Panels},
                   {768, 2048, 32000},
                   {768},
                   {1}})
    ->ArgsProduct(
        {{kF32Blas, kF32, kBf16, kF32Panels, kBf16Panels}, {768}, {2048}, {1}})
    // Decode batches: FLOPS against OpenBLAS sgemm.
    ->ArgsProduct({{kF32Blas, kF32, kBf16, kF32Panels, kBf16Panels},
                   {2048},
                   {768},
                   {4, 16, 32, 64}})
    ->ArgsProduct({{kF32Blas, kF32, kBf16, kF32Panels, kBf16Panels},
                   {768},
                   {2048},
                   {4, 16, 32, 64}})
    ->UseRealTime();

// Quantized weights streamed from DRAM next to f32 / bf16 panels (what the
// engine serves them as on AVX2) and row-major: SmolLM2-135M (1536 x 576
// gate/up, 576 x 1536 down, 49152 x 576 head) and stories110M shapes.
void StreamedQuantArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"path", "rows", "cols", "n"});
  const std::pair<int64_t, int64_t> decode_shapes[] = {
      {1536, 576}, {576, 1536}, {2048, 768}, {32000, 768}, {49152, 576}};
  for (int64_t path :
       {kF32Panels, kBf16Panels, kF32, kBf16, kQ8_0, kQ4_0, kQ4_1}) {
    for (auto [rows, cols] : decode_shapes) b->Args({path, rows, cols, 1});
  }
  for (int64_t path : {kF32Panels, kBf16Panels, kQ8_0, kQ4_0, kQ4_1}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{1536, 576}, {2048, 768}}) {
      for (int64_t n : {16, 32, 64}) b->Args({path, rows, cols, n});
    }
  }
}
BENCHMARK(BM_MatMulStreamed)
    ->Name("BM_MatMulStreamedQuant")
    ->Apply(StreamedQuantArgs)
    ->UseRealTime();

// One decode token's products of the stories110M shape (12 layers of Q/K/V
// and gate/up as MatMulGroup, O and down alone, then the 32000-row
// classifier), n = 1, weights streamed from DRAM: the engine's step without
// attention, norms or sampling. Compare bytes_per_second with the probe.
void BM_DecodeProducts110M(benchmark::State& state) {
  const auto path = static_cast<Path>(state.range(0));
  const DType dtype = PathDType(path);
  constexpr int64_t kDim = 768, kFfn = 2048, kVocab = 32000, kLayers = 12;
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  RandomWeights weights(5);
  auto make = [&](int64_t rows, int64_t cols) {
    return weights.MakeFor(path, rows, cols);
  };
  struct Layer {
    WeightView qkv[3], o, gate_up[2], down;
  };
  std::vector<Layer> layers(kLayers);
  for (Layer& l : layers) {
    for (auto& w : l.qkv) w = make(kDim, kDim);
    l.o = make(kDim, kDim);
    for (auto& w : l.gate_up) w = make(kFfn, kDim);
    l.down = make(kDim, kFfn);
  }
  const WeightView cls = make(kVocab, kDim);
  std::vector<float> x(kFfn), a(kFfn), b(kFfn), c(kFfn), logits(kVocab);
  for (float& f : x) f = dist(rng);
  static const double probe = MeasureReadBandwidth(int64_t{512} << 20, 2);
  // The baseline runs each product alone through OpenBLAS.
  auto group = [&](const WeightView* ws, float* const* ys, int count) {
    if (path == kF32Blas) {
      for (int i = 0; i < count; ++i) Product(path, x.data(), 1, ws[i], ys[i]);
    } else {
      MatMulGroup(x.data(), 1, ws, ys, count);
    }
  };
  for (auto _ : state) {
    for (const Layer& l : layers) {
      float* qkv_out[3] = {a.data(), b.data(), c.data()};
      group(l.qkv, qkv_out, 3);
      Product(path, a.data(), 1, l.o, b.data());
      float* gu_out[2] = {a.data(), c.data()};
      group(l.gate_up, gu_out, 2);
      Product(path, a.data(), 1, l.down, b.data());
    }
    Product(path, x.data(), 1, cls, logits.data());
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  const double bytes =
      static_cast<double>(kLayers * (4 * kDim * kDim + 3 * kFfn * kDim) +
                          kVocab * kDim) *
      DTypeRowBytes(dtype, 32) / 32.0;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["tokens_per_s"] =
      benchmark::Counter(state.iterations(), benchmark::Counter::kIsRate);
  state.counters["probe_GBs"] = probe / 1e9;
  state.counters["roofline_tok_s"] = probe / bytes;
  state.SetLabel(kPathNames[path]);
}
BENCHMARK(BM_DecodeProducts110M)
    ->ArgName("path")
    ->Arg(kF32Blas)
    ->Arg(kF32)
    ->Arg(kBf16)
    ->Arg(kF32Panels)
    ->Arg(kBf16Panels)
    ->Arg(kQ8_0)
    ->Arg(kQ4_0)
    ->Arg(kQ4_1)
    ->UseRealTime();

// Decode attention of one sequence (one query row per head) over `ctx`
// cached tokens in pages of 16: the stories260K shape (8 heads, 4 KV heads,
// head dim 8: overhead-bound) and the stories110M shape (12 heads, 12 KV
// heads, head dim 64). Counter: visited slots (heads x ctx) per second.
void BM_PagedAttentionDecode(benchmark::State& state) {
  const int32_t heads = static_cast<int32_t>(state.range(0));
  const int32_t kv_heads = static_cast<int32_t>(state.range(1));
  const int32_t d = static_cast<int32_t>(state.range(2));
  const int32_t ctx = static_cast<int32_t>(state.range(3));
  constexpr int32_t kPage = 16;
  const int32_t pages_per_head = (ctx + kPage - 1) / kPage;
  const int32_t pages = pages_per_head * kv_heads;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> k(int64_t{pages} * kPage * d), v(k.size()),
      q(int64_t{heads} * d), out(q.size());
  for (float& f : k) f = dist(rng);
  for (float& f : v) f = dist(rng);
  for (float& f : q) f = dist(rng);
  std::vector<int32_t> pos(int64_t{pages} * kPage), indices(pages),
      indptr(kv_heads + 1), last(kv_heads, ctx - (pages_per_head - 1) * kPage);
  for (int32_t h = 0; h < kv_heads; ++h) {
    indptr[h + 1] = (h + 1) * pages_per_head;
    for (int32_t p = 0; p < pages_per_head; ++p) {
      const int32_t page = h * pages_per_head + p;
      indices[page] = page;
      for (int32_t s = 0; s < kPage; ++s) pos[page * kPage + s] = p * kPage + s;
    }
  }
  const int32_t q_indptr[2] = {0, 1};
  const int32_t q_pos = ctx;
  PagedAttentionArgs a;
  a.num_seqs = 1;
  a.n_heads = heads;
  a.n_kv_heads = kv_heads;
  a.d_qk = a.d_vo = d;
  a.page_size = kPage;
  a.scale = 1.0f / std::sqrt(static_cast<float>(d));
  a.q_indptr = q_indptr;
  a.q = q.data();
  a.q_pos = &q_pos;
  a.kv_indptr = indptr.data();
  a.kv_indices = indices.data();
  a.kv_last_page_len = last.data();
  a.k_pool = k.data();
  a.v_pool = v.data();
  a.pos_pool = pos.data();
  a.out = out.data();
  for (auto _ : state) {
    PagedAttention(a);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["slots_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * heads * ctx,
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PagedAttentionDecode)
    ->ArgNames({"heads", "kv_heads", "d", "ctx"})
    ->Args({8, 4, 8, 256})
    ->Args({12, 12, 64, 512});

// An f32 (OpenBLAS threads) and a bf16 (OpenMP threads) product back to back,
// as in a model mixing both: shows whether the two thread pools get in each
// other's way (compare with the sum of the two separate rows).
void BM_MixedF32ThenBf16(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(cols), y(rows);
  for (float& f : x) f = dist(rng);
  RandomWeights weights(3);
  const WeightView wf = weights.Make(rows, cols, DType::kF32);
  const WeightView wb = weights.Make(rows, cols, DType::kBF16);
  for (auto _ : state) {
    MatMul(x.data(), 1, wf, y.data());
    MatMul(x.data(), 1, wb, y.data());
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
