// AVX2 + FMA kernels (see gemv_avx2.h). Compiled with
// -mavx2 -mfma; includes nothing but intrinsics so no inline library code
// built with those flags leaks into the rest of the binary.
#include "kernels/cpu/gemv_avx2.h"

#include <immintrin.h>

#include <cstdint>

namespace latentkv::kernels::internal {
namespace {

// 8 weights as f32 (a bf16 is the high half of an f32).
inline __m256 Load8(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }

inline float Sum8(__m256 v) {
  const __m128 s =
      _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline float ToF32(uint16_t b) {
  return __builtin_bit_cast(float, uint32_t{b} << 16);
}
inline float ToF32(float f) { return f; }

// R weight rows (bf16 or f32) x N inputs: R * N accumulators, R weight
// vectors and one x vector fit the 16 ymm registers (R = 4, N = 2: 13;
// R = 3, N = 4: 16).
template <int R, int N, typename T>
inline void Tile(const float* x, int64_t ldx, const T* w, int64_t cols,
                 float* y, int64_t ldy) {
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const int64_t full = cols / 8 * 8;
  auto step = [&](int64_t c) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = Load8(w + r * cols + c);
#pragma GCC unroll 4
    for (int j = 0; j < N; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + j * ldx + c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
      }
    }
  };
  int64_t c = 0;
  // 32 columns (one 64-byte line of each weight row) per iteration, with one
  // software prefetch per row and line: the same line of the next tile's
  // rows (rows are short, e.g. 1.5 KiB, so "further along this row" would
  // fetch what this tile reads anyway).
  constexpr int64_t kLine = 64 / sizeof(T);
  for (; c + kLine <= full; c += kLine) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (r + R) * cols + c),
                   _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t u = 0; u < kLine; u += 8) step(c + u);
  }
  for (; c < full; c += 8) step(c);
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) {
      float s = Sum8(acc[r][j]);
      for (int64_t c = full; c < cols; ++c) {
        s += ToF32(w[r * cols + c]) * x[j * ldx + c];
      }
      y[j * ldy + r] = s;
    }
  }
}

// Weight rows [r, r + R) against every input, N at a time.
template <int R, int N, typename T>
inline void Rows(const float* x, int64_t n, int64_t ldx, const T* w,
                 int64_t cols, int64_t r, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + N <= n; j += N) {
    Tile<R, N>(x + j * ldx, ldx, w + r * cols, cols, y + j * ldy + r, ldy);
  }
  for (; j < n; ++j) {
    Tile<R, 1>(x + j * ldx, ldx, w + r * cols, cols, y + j * ldy + r, ldy);
  }
}

// 3 x 4 tiles (12 accumulators, 3 weight vectors, one x vector: all 16 ymm
// registers; 12 FMAs per 7 loads) once there are 4 inputs: at n = 64 they
// gave 104-110 GFLOP/s in cache against 82-87 for 4 x 2 tiles, and 309-313
// tok/s at 64 decode streams against 244-289 (bench/RESULTS.md).
template <typename T>
void RowsAll(const float* x, int64_t n, int64_t ldx, const T* w, int64_t cols,
             int64_t r0, int64_t r1, float* y, int64_t ldy) {
  int64_t r = r0;
  if (n >= 4) {
    for (; r + 3 <= r1; r += 3) Rows<3, 4>(x, n, ldx, w, cols, r, y, ldy);
  }
  for (; r + 4 <= r1; r += 4) Rows<4, 2>(x, n, ldx, w, cols, r, y, ldy);
  for (; r < r1; ++r) Rows<1, 2>(x, n, ldx, w, cols, r, y, ldy);
}

// Row i of each of the S sub-ranges of [r0, r1) at once: S sequential streams
// through memory, each prefetched one row (its next row) ahead.
template <int S, typename T>
void GemvStreams(const float* x, const T* w, int64_t cols, int64_t r0,
                 int64_t r1, float* y) {
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  const int64_t len = (r1 - r0) / S;
  const int64_t full = cols / 8 * 8;
  const int64_t lines = full / kLine * kLine;
  for (int64_t i = 0; i < len; ++i) {
    const T* p[S];
    __m256 acc[S];
    for (int k = 0; k < S; ++k) {
      p[k] = w + (r0 + k * len + i) * cols;
      acc[k] = _mm256_setzero_ps();
    }
    int64_t c = 0;
    for (; c < lines; c += kLine) {
#pragma GCC unroll 8
      for (int k = 0; k < S; ++k) {
        _mm_prefetch(reinterpret_cast<const char*>(p[k] + cols + c),
                     _MM_HINT_T0);
      }
#pragma GCC unroll 4
      for (int64_t u = 0; u < kLine; u += 8) {
        const __m256 xv = _mm256_loadu_ps(x + c + u);
#pragma GCC unroll 8
        for (int k = 0; k < S; ++k) {
          acc[k] = _mm256_fmadd_ps(Load8(p[k] + c + u), xv, acc[k]);
        }
      }
    }
    for (; c < full; c += 8) {
      const __m256 xv = _mm256_loadu_ps(x + c);
      for (int k = 0; k < S; ++k) {
        acc[k] = _mm256_fmadd_ps(Load8(p[k] + c), xv, acc[k]);
      }
    }
    for (int k = 0; k < S; ++k) {
      float s = Sum8(acc[k]);
      for (int64_t cc = full; cc < cols; ++cc) s += ToF32(p[k][cc]) * x[cc];
      y[r0 + k * len + i] = s;
    }
  }
  // The rows that do not divide into S streams, as one stream.
  if constexpr (S > 1) GemvStreams<1>(x, w, cols, r0 + S * len, r1, y);
}

}  // namespace

void Bf16GemvAvx2(const float* x, const uint16_t* w, int64_t cols, int64_t r0,
                  int64_t r1, float* y) {
  GemvStreams<kGemvStreams>(x, w, cols, r0, r1, y);
}

void F32GemvAvx2(const float* x, const float* w, int64_t cols, int64_t r0,
                 int64_t r1, float* y) {
  GemvStreams<kGemvStreams>(x, w, cols, r0, r1, y);
}

void Bf16RowsAvx2(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if (n == 1) {
    GemvStreams<kGemvStreams>(x, w, cols, r0, r1, y);
  } else {
    RowsAll(x, n, ldx, w, cols, r0, r1, y, ldy);
  }
}

}  // namespace latentkv::kernels::internal
