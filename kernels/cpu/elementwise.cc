// Element-wise ops, embeddings, RoPE tables and the bandwidth probe.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/gemm_avx2.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace latentkv::kernels {

void RmsNorm(const float* x, const float* weight, int64_t n, int64_t dim,
             float eps, float* y) {
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t t = r0; t < r1; ++t) {
      const float* xr = x + t * dim;
      float* yr = y + t * dim;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
      for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] * inv) * weight[i];
    }
  };
  internal::ParallelForBlocks(n, n * dim, rows);
}

void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d, int64_t rope_dims,
               const int32_t* positions, const float* inv_freq) {
  const int64_t half = rope_dims / 2;
  if (half == 0) return;
  auto tokens = [&](int64_t t0, int64_t t1) {
    // cos/sin of each pair's angle, shared by all heads of a token.
    thread_local std::vector<float> cs;
    if (static_cast<int64_t>(cs.size()) < 2 * half) cs.resize(2 * half);
    float* c = cs.data();
    float* s = c + half;
    for (int64_t t = t0; t < t1; ++t) {
      const double pos = positions[t];
      for (int64_t j = 0; j < half; ++j) {
        const double angle = pos * static_cast<double>(inv_freq[j]);
        c[j] = static_cast<float>(std::cos(angle));
        s[j] = static_cast<float>(std::sin(angle));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* lo = x + (t * heads + h) * d;
        float* hi = lo + half;
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          const float a = lo[j];
          const float b = hi[j];
          lo[j] = a * c[j] - b * s[j];
          hi[j] = b * c[j] + a * s[j];
        }
      }
    }
  };
  internal::ParallelForBlocks(n, n * heads * rope_dims * 4, tokens);
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  auto part = [&](int64_t b0, int64_t b1) {
    constexpr int64_t kBlock = 4096;
    const int64_t i1 = std::min(n, b1 * kBlock);
#pragma omp simd
    for (int64_t i = b0 * kBlock; i < i1; ++i) {
      // sigmoid(g) from e = e^-|g| <= 1, which cannot overflow.
      const float g = gate[i];
      const float e = internal::ExpNonPositive(-std::fabs(g));
      const float inv = 1.0f / (1.0f + e);
      const float sig = g < 0.0f ? e * inv : inv;
      out[i] = g * sig * up[i];
    }
  };
  internal::ParallelForBlocks((n + 4095) / 4096, n * 8, part);
}

void GeluTanhGlu(const float* gate, const float* up, int64_t n, float* out) {
  auto part = [&](int64_t b0, int64_t b1) {
    constexpr int64_t kBlock = 4096;
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    const int64_t i1 = std::min(n, b1 * kBlock);
    for (int64_t i = b0 * kBlock; i < i1; ++i) {
      const float g = gate[i];
      const float t = std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g));
      out[i] = 0.5f * g * (1.0f + t) * up[i];
    }
  };
  internal::ParallelForBlocks((n + 4095) / 4096, n * 16, part);
}

void AddInPlace(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void AddRowBias(float* y, const float* bias, int64_t n, int64_t dim) {
  for (int64_t t = 0; t < n; ++t) {
    float* row = y + t * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) row[i] += bias[i];
  }
}

void Scale(float* x, int64_t n, float s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t n,
                float* out) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * dim, x + int64_t{rows[i]} * dim, sizeof(float) * dim);
  }
}

void ArgmaxRows(const float* x, int64_t rows, int64_t cols, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    int32_t best = 0;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < cols; ++i) {
      if (row[i] > best_value) {  // strict: lowest index on ties; skips NaN
        best_value = row[i];
        best = static_cast<int32_t>(i);
      }
    }
    out[r] = best;
  }
}

void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
           float* out) {
  const int64_t dim = table.cols;
  const int64_t row_bytes = DTypeRowBytes(table.dtype, dim);
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t t = 0; t < n; ++t) {
    float* o = out + t * dim;
    const int64_t tok = tokens[t];
    if (tok < 0 || tok >= table.rows) {  // out of range: zeros, never a crash
      std::memset(o, 0, dim * sizeof(float));
      continue;
    }
    if (table.layout == WeightLayout::kPanels16) {
      // Row tok's values are kPanelRows apart within its panel.
      constexpr int64_t kRows = internal::kPanelRows;
      const int64_t panel = tok / kRows * kRows * dim;
      const int64_t slot = internal::PanelSlot(table.dtype, tok % kRows);
      for (int64_t c = 0; c < dim; ++c) {
        ConvertToF32(base + (panel + c * kRows + slot) * DTypeSize(table.dtype),
                     table.dtype, 1, o + c);
      }
      continue;
    }
    ConvertToF32(base + tok * row_bytes, table.dtype, dim, o);
  }
}

void RopeInvFreqStandard(int64_t d, double base, float* inv_freq) {
  for (int64_t j = 0; j < d / 2; ++j) {
    inv_freq[j] = static_cast<float>(
        std::pow(base, -static_cast<double>(2 * j) / static_cast<double>(d)));
  }
}

void RopeInvFreqFrequencyAware(int64_t d, double base, float* inv_freq) {
  // e = concat(arange(d/4, 3d/4, 2), arange(3d/4, d, 1)) / d: d/4 + d/4 = d/2
  // exponents.
  int64_t j = 0;
  for (int64_t k = d / 4; k < 3 * d / 4; k += 2) {
    inv_freq[j++] = static_cast<float>(
        std::pow(base, -static_cast<double>(k) / static_cast<double>(d)));
  }
  for (int64_t k = 3 * d / 4; k < d && j < d / 2; ++k) {
    inv_freq[j++] = static_cast<float>(
        std::pow(base, -static_cast<double>(k) / static_cast<double>(d)));
  }
}

double MeasureComputePeak(int threads) {
  if (threads < 1) threads = 1;
  if (!internal::CpuHasAvx2Fma()) return 0.0;
  constexpr int64_t kIterations = 4 << 20;  // ~0.1 s per run here
  double best = 0.0;
  double sink = 0.0;
  for (int run = 0; run < 3; ++run) {
    double total = 0.0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += internal::F32FmaLoopAvx2(kIterations);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    sink += total;
    if (secs > 0) best = std::max(best, threads * kIterations * 192.0 / secs);
  }
  if (sink == 42.0) best += 1e-300;  // keeps the loops' results observable
  return best;
}

double MeasureReadBandwidth(int64_t bytes, int threads) {
  if (threads < 1) threads = 1;
  const int64_t words = std::max<int64_t>(bytes / 8, 1024) / 64 * 64;
  auto* buf =
      static_cast<uint64_t*>(std::aligned_alloc(64, words * sizeof(uint64_t)));
  if (buf == nullptr) return 0.0;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < words; ++i) buf[i] = static_cast<uint64_t>(i);

  double best = 0.0;
  uint64_t sink = 0;
  for (int run = 0; run < 5; ++run) {
    uint64_t total = 0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int64_t t = omp_get_thread_num();
      const int64_t nt = omp_get_num_threads();
      const int64_t i0 = words / 64 * t / nt * 64;
      const int64_t i1 = words / 64 * (t + 1) / nt * 64;
      // 8 concurrent streams per thread (one is latency-bound on this VM).
      constexpr int kStreams = 8;
      const int64_t len = (i1 - i0) / kStreams;
      const uint64_t* base = buf + i0;
      uint64_t s[kStreams] = {};
      for (int64_t i = 0; i < len; i += 2) {
        for (int k = 0; k < kStreams; ++k) {
          s[k] += base[k * len + i] + base[k * len + i + 1];
        }
      }
      for (int k = 0; k < kStreams; ++k) total += s[k];
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    sink += total;
    if (secs > 0) best = std::max(best, words * 8.0 / secs);
  }
  std::free(buf);
  // Keeps the sums observable so the reads cannot be optimised away.
  if (sink == 42) best += 1e-300;
  return best;
}

}  // namespace latentkv::kernels
