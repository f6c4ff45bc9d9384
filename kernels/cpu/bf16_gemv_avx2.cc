// AVX2 + FMA kernel for bf16 weights (see bf16_avx2.h). Compiled with
// -mavx2 -mfma; includes nothing but intrinsics so no inline library code
// built with those flags leaks into the rest of the binary.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/bf16_avx2.h"

namespace latentkv::kernels::internal {
namespace {

// 8 bf16 weights -> 8 f32 (a bf16 is the high half of an f32).
inline __m256 Widen8(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

inline float Sum8(__m256 v) {
  const __m128 s =
      _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline float Bf16(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}

// R weight rows x N inputs: R * N accumulators, R weight vectors and one x
// vector fit the 16 ymm registers (R = 4, N = 2: 13).
template <int R, int N>
inline void Tile(const float* x, int64_t ldx, const uint16_t* w, int64_t cols,
                 float* y, int64_t ldy) {
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const int64_t full = cols / 8 * 8;
  auto step = [&](int64_t c) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = Widen8(w + r * cols + c);
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
  for (; c + 32 <= full; c += 32) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (r + R) * cols + c),
                   _MM_HINT_T0);
    }
    step(c);
    step(c + 8);
    step(c + 16);
    step(c + 24);
  }
  for (; c < full; c += 8) step(c);
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) {
      float s = Sum8(acc[r][j]);
      for (int64_t c = full; c < cols; ++c) {
        s += Bf16(w[r * cols + c]) * x[j * ldx + c];
      }
      y[j * ldy + r] = s;
    }
  }
}

// Weight rows [r, r + R) against every input, N at a time.
template <int R>
inline void Rows(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                 int64_t cols, int64_t r, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    Tile<R, 2>(x + j * ldx, ldx, w + r * cols, cols, y + j * ldy + r, ldy);
  }
  if (j < n)
    Tile<R, 1>(x + j * ldx, ldx, w + r * cols, cols, y + j * ldy + r, ldy);
}

}  // namespace

void Bf16RowsAvx2(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  int64_t r = r0;
  if (n == 1) {
    // One input (single-stream decode): more rows in flight per tile.
    for (; r + 6 <= r1; r += 6) {
      Tile<6, 1>(x, ldx, w + r * cols, cols, y + r, ldy);
    }
  }
  for (; r + 4 <= r1; r += 4) Rows<4>(x, n, ldx, w, cols, r, y, ldy);
  for (; r < r1; ++r) Rows<1>(x, n, ldx, w, cols, r, y, ldy);
}

}  // namespace latentkv::kernels::internal
