// AVX2 + FMA panel kernels (see gemm_avx2.h). Compiled with -mavx2 -mfma;
// includes nothing but intrinsics and <algorithm>'s min so no inline library
// code built with those flags leaks into the rest of the binary.
#include "kernels/cpu/gemm_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace latentkv::kernels::internal {
namespace {

// One column of a panel as two vectors: rows 0-7 and 8-15. bf16 panels keep
// each column's rows in the order 0-3, 8-11, 4-7, 12-15 (ops.h), which the
// per-lane unpacks below turn into rows 0-7 and 8-15.
inline void LoadColumn(const float* p, __m256& lo, __m256& hi) {
  lo = _mm256_loadu_ps(p);
  hi = _mm256_loadu_ps(p + 8);
}
inline void LoadColumn(const uint16_t* p, __m256& lo, __m256& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i z = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v));
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v));
}

// Columns per 64-byte line of a panel (16 values per column).
template <typename T>
inline constexpr int64_t kLineCols = 64 / (kPanelRows * sizeof(T));
// Software prefetch distance along a panel, in bytes: the panels are read
// as sequential streams, one per panel in flight.
inline constexpr int64_t kAheadBytes = 1024;

// M inputs x P panels over kc columns: inputs broadcast from xs (input j of
// column c at xs[c * ldx + j]), panel s read from ps[s] (16 values per
// column). Writes (or, when `accumulate`, adds) the first valid[s] rows of
// panel s to ys[s][j * ldy + i]. Accumulators: 2 * M * P <= 12 ymm.
// kAhead: prefetch each panel kAheadBytes ahead (panels read once, from
// DRAM). Otherwise, when pf is not null, prefetch one line from pf on every
// pf_every columns (the caller's next chunk, spread over the passes).
template <int M, int P, bool kAhead, typename T>
inline void Micro(const float* xs, int64_t ldx, const T* const* ps, int64_t kc,
                  float* const* ys, int64_t ldy, const int* valid,
                  bool accumulate, const char* pf = nullptr,
                  int64_t pf_every = 0) {
  static_assert(2 * M * P <= 12);
  // Every loop over acc is fully unrolled: with a run-time index GCC keeps
  // the array in memory and stores all of it on every column (measured 2x
  // slower).
  __m256 acc[P][M][2];
#pragma GCC unroll 4
  for (int s = 0; s < P; ++s) {
#pragma GCC unroll 6
    for (int j = 0; j < M; ++j) {
      acc[s][j][0] = _mm256_setzero_ps();
      acc[s][j][1] = _mm256_setzero_ps();
    }
  }
  auto column = [&](int64_t c) {
#pragma GCC unroll 4
    for (int s = 0; s < P; ++s) {
      __m256 lo, hi;
      LoadColumn(ps[s] + c * kPanelRows, lo, hi);
#pragma GCC unroll 6
      for (int j = 0; j < M; ++j) {
        const __m256 b = _mm256_broadcast_ss(xs + c * ldx + j);
        acc[s][j][0] = _mm256_fmadd_ps(b, lo, acc[s][j][0]);
        acc[s][j][1] = _mm256_fmadd_ps(b, hi, acc[s][j][1]);
      }
    }
  };
  // Streaming: one prefetch per line of each panel. Otherwise four columns
  // per iteration (less loop overhead per 48 FMAs).
  constexpr int64_t kStep = kAhead ? kLineCols<T> : 4;
  constexpr int64_t kAheadCols = kAheadBytes / (kPanelRows * sizeof(T));
  int64_t c = 0;
  int64_t pf_next = 0;
  for (; c + kStep <= kc; c += kStep) {
    if (!kAhead && pf != nullptr) {
      for (; pf_next <= c; pf_next += pf_every, pf += 64) {
        _mm_prefetch(pf, _MM_HINT_T1);
      }
    }
    if constexpr (kAhead) {
#pragma GCC unroll 4
      for (int s = 0; s < P; ++s) {
        _mm_prefetch(reinterpret_cast<const char*>(ps[s] + (c + kAheadCols) *
                                                               kPanelRows),
                     _MM_HINT_T0);
      }
    }
#pragma GCC unroll 4
    for (int64_t u = 0; u < kStep; ++u) column(c + u);
  }
  for (; c < kc; ++c) column(c);
#pragma GCC unroll 4
  for (int s = 0; s < P; ++s) {
#pragma GCC unroll 6
    for (int j = 0; j < M; ++j) {
      float* out = ys[s] + j * ldy;
      if (valid[s] == kPanelRows) {
        if (accumulate) {
          acc[s][j][0] = _mm256_add_ps(acc[s][j][0], _mm256_loadu_ps(out));
          acc[s][j][1] = _mm256_add_ps(acc[s][j][1], _mm256_loadu_ps(out + 8));
        }
        _mm256_storeu_ps(out, acc[s][j][0]);
        _mm256_storeu_ps(out + 8, acc[s][j][1]);
      } else {
        alignas(32) float tmp[kPanelRows];
        _mm256_store_ps(tmp, acc[s][j][0]);
        _mm256_store_ps(tmp + 8, acc[s][j][1]);
        for (int i = 0; i < valid[s]; ++i) {
          out[i] = accumulate ? out[i] + tmp[i] : tmp[i];
        }
      }
    }
  }
}

// Fewer inputs than a group: weight-streaming-bound, so P panels from P
// far-apart sub-ranges of [p0, p1) are read together (several sequential
// streams per thread, the lesson of the row-major n = 1 kernel), then the
// panels left over one at a time.
template <int M, int P, typename T>
void Streams(const float* xs, int64_t ldx, const T* w, int64_t rows,
             int64_t cols, int64_t p0, int64_t p1, float* y, int64_t ldy) {
  const int64_t panel = cols * kPanelRows;
  auto run = [&]<int Q>(const int64_t* ids) {
    const T* ps[Q];
    float* ys[Q];
    int valid[Q];
    for (int s = 0; s < Q; ++s) {
      ps[s] = w + ids[s] * panel;
      ys[s] = y + ids[s] * kPanelRows;
      valid[s] = static_cast<int>(
          std::min<int64_t>(kPanelRows, rows - ids[s] * kPanelRows));
    }
    Micro<M, Q, true>(xs, ldx, ps, cols, ys, ldy, valid, false);
  };
  const int64_t len = (p1 - p0) / P;
  for (int64_t i = 0; i < len; ++i) {
    int64_t ids[P];
    for (int s = 0; s < P; ++s) ids[s] = p0 + s * len + i;
    run.template operator()<P>(ids);
  }
  for (int64_t p = p0 + P * len; p < p1; ++p) run.template operator()<1>(&p);
}

// Columns per chunk for six inputs and more: a panel's chunk (16 KiB in
// f32) stays in L1 while every group of inputs passes over it.
inline constexpr int64_t kChunkCols = 256;
// Inputs per block: one block's chunk of packed inputs (120 x 256 floats,
// 120 KiB) stays in L2 while the thread's panels pass over it.
inline constexpr int64_t kBlockInputs = 20 * kPanelGroup;

// One micro-kernel call of m (1-6) packed inputs against one panel chunk.
template <typename T>
void Group(int64_t m, const float* xs, const T* const* ps, int64_t kc,
           float* const* ys, int64_t ldy, const int* valid, bool acc,
           const char* pf, int64_t pf_every) {
  using Fn =
      void (*)(const float*, int64_t, const T* const*, int64_t, float* const*,
               int64_t, const int*, bool, const char*, int64_t);
  static constexpr Fn kMicro[kPanelGroup] = {
      &Micro<1, 1, false, T>, &Micro<2, 1, false, T>, &Micro<3, 1, false, T>,
      &Micro<4, 1, false, T>, &Micro<5, 1, false, T>, &Micro<6, 1, false, T>};
  kMicro[m - 1](xs, kPanelGroup, ps, kc, ys, ldy, valid, acc, pf, pf_every);
}

// Six inputs and more: each panel chunk is read from memory once (it stays
// in L1) while every group of the block's inputs passes over it; the next
// chunk (of this panel or the next) is prefetched into L2 over the first
// two groups' passes, so it arrives while this one is multiplied without
// evicting it from L1 (16 KiB chunk + 16 KiB next + inputs would not fit
// the 32 KiB L1).
template <typename T>
void Groups(const float* xp, int64_t n, const T* w, int64_t rows, int64_t cols,
            int64_t p0, int64_t p1, float* y, int64_t ldy) {
  const int64_t panel = cols * kPanelRows;
  const char* const end = reinterpret_cast<const char*>(w + p1 * panel);
  for (int64_t j0 = 0; j0 < n; j0 += kBlockInputs) {
    const int64_t j1 = std::min(n, j0 + kBlockInputs);
    const int64_t groups = (j1 - j0 + kPanelGroup - 1) / kPanelGroup;
    for (int64_t p = p0; p < p1; ++p) {
      const int valid = static_cast<int>(
          std::min<int64_t>(kPanelRows, rows - p * kPanelRows));
      for (int64_t c0 = 0; c0 < cols; c0 += kChunkCols) {
        const int64_t kc = std::min(kChunkCols, cols - c0);
        const T* ps[1] = {w + p * panel + c0 * kPanelRows};
        // Chunks are contiguous, so the next one starts where this ends.
        const char* next =
            reinterpret_cast<const char*>(ps[0] + kc * kPanelRows);
        const int64_t next_bytes =
            std::min<int64_t>(kChunkCols * kPanelRows * sizeof(T), end - next);
        // Lines of it per pass, and columns between two prefetches.
        const int64_t passes = std::min<int64_t>(groups, 2);
        const int64_t slice = (next_bytes / 64 + passes - 1) / passes;
        const int64_t every =
            std::max<int64_t>(1, kc / std::max<int64_t>(1, slice));
        for (int64_t gi = 0; gi < groups; ++gi) {
          const int64_t j = j0 + gi * kPanelGroup;
          const char* pf =
              next_bytes > 0 && gi < passes ? next + gi * slice * 64 : nullptr;
          float* ys[1] = {y + j * ldy + p * kPanelRows};
          Group(std::min<int64_t>(kPanelGroup, n - j),
                xp + j * cols + c0 * kPanelGroup, ps, kc, ys, ldy, &valid,
                c0 > 0, pf, every);
        }
      }
    }
  }
}

template <typename T>
void Panels(const float* x, const float* xp, int64_t n, const T* w,
            int64_t rows, int64_t cols, int64_t p0, int64_t p1, float* y,
            int64_t ldy) {
  if (p0 >= p1 || n <= 0) return;
  const int64_t g = kPanelGroup;
  switch (n) {
    case 1:
      return Streams<1, 4>(x, 1, w, rows, cols, p0, p1, y, ldy);
    case 2:
      return Streams<2, 3>(xp, g, w, rows, cols, p0, p1, y, ldy);
    case 3:
      return Streams<3, 2>(xp, g, w, rows, cols, p0, p1, y, ldy);
    case 4:
      return Streams<4, 1>(xp, g, w, rows, cols, p0, p1, y, ldy);
    case 5:
      return Streams<5, 1>(xp, g, w, rows, cols, p0, p1, y, ldy);
    default:
      return Groups(xp, n, w, rows, cols, p0, p1, y, ldy);
  }
}

}  // namespace

int64_t PackedInputFloats(int64_t n, int64_t cols) {
  return (n + kPanelGroup - 1) / kPanelGroup * kPanelGroup * cols;
}

void PackInputs(const float* x, int64_t n, int64_t ldx, int64_t cols,
                float* xp) {
  for (int64_t j0 = 0; j0 < n; j0 += kPanelGroup) {
    float* g = xp + j0 * cols;
    const int64_t m = std::min(kPanelGroup, n - j0);
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t i = 0; i < kPanelGroup; ++i) {
        g[c * kPanelGroup + i] = i < m ? x[(j0 + i) * ldx + c] : 0.0f;
      }
    }
  }
}

void PanelsAvx2(const float* x, const float* xp, int64_t n, const float* w,
                int64_t rows, int64_t cols, int64_t p0, int64_t p1, float* y,
                int64_t ldy) {
  Panels(x, xp, n, w, rows, cols, p0, p1, y, ldy);
}

void PanelsAvx2(const float* x, const float* xp, int64_t n, const uint16_t* w,
                int64_t rows, int64_t cols, int64_t p0, int64_t p1, float* y,
                int64_t ldy) {
  Panels(x, xp, n, w, rows, cols, p0, p1, y, ldy);
}

}  // namespace latentkv::kernels::internal
