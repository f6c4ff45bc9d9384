// AVX-512 kernels for bf16 weights (see bf16_avx512.h). This file is compiled
// with AVX-512 flags; it includes nothing but intrinsics so that no inline
// library code built with those flags can leak into the rest of the binary.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/bf16_avx512.h"

namespace latentkv::kernels::internal {
namespace {

// Mask of the first `rem` (1..32) 16-bit lanes.
inline __mmask32 TailMask(int64_t rem) {
  return _cvtu32_mask32(rem >= 32 ? 0xffffffffu : (1u << rem) - 1u);
}

// Widens 32 bf16 weights (one zmm of 16 dwords) to f32: the low half of each
// dword is the even column, the high half the odd column.
inline void Widen(__m512i v, __m512& even, __m512& odd) {
  even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  odd = _mm512_castsi512_ps(
      _mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// Horizontal sums of 8 vectors: out[i] = sum of the 16 lanes of a[i].
// A transpose-and-add tree: ~24 shuffles/adds instead of 8 serial reductions.
inline void Reduce8(const __m512 a[8], float* out) {
  __m512 t[4];
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  }
  __m512 u[2];
  for (int i = 0; i < 2; ++i) {
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(t[2 * i]),
                                          _mm512_castps_pd(t[2 * i + 1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(t[2 * i]),
                                          _mm512_castps_pd(t[2 * i + 1]));
    // Each 128-bit lane k: partial sums of a[4i..4i+3] over lane k.
    u[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
  }
  const __m512 w =
      _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 x = _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(3, 1, 2, 0));
  const __m256 high =
      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
  _mm256_storeu_ps(out, _mm256_add_ps(_mm512_castps512_ps256(x), high));
}

// Stores y[j * ldy + r] = sum(acc[r][j]).
template <int R, int N>
inline void StoreSums(const __m512 (&acc)[R][N], float* y, int64_t ldy) {
  if constexpr (R == 8 && N == 1) {
    const __m512 a[8] = {acc[0][0], acc[1][0], acc[2][0], acc[3][0],
                         acc[4][0], acc[5][0], acc[6][0], acc[7][0]};
    Reduce8(a, y);
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) {
        y[j * ldy + r] = _mm512_reduce_add_ps(acc[r][j]);
      }
    }
  }
}

// R weight rows x N input rows, x in f32 (deinterleaved blocks).
template <int R, int N>
inline void TileF32(const float* xp, int64_t ldx, const uint16_t* w,
                    int64_t cols, float* y, int64_t ldy) {
  __m512 acc[R][N];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const int64_t full = cols / kBf16Block;
  const int64_t rem = cols - full * kBf16Block;
  auto step = [&](int64_t b, __mmask32 mask, bool masked) {
    __m512 we[R], wo[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint16_t* p = w + r * cols + b * kBf16Block;
      // Weights stream from memory once: fetch 8 cache lines ahead.
      _mm_prefetch(reinterpret_cast<const char*>(p) + 512, _MM_HINT_T0);
      const __m512i v =
          masked ? _mm512_maskz_loadu_epi16(mask, p) : _mm512_loadu_si512(p);
      Widen(v, we[r], wo[r]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) {
      const float* xj = xp + j * ldx + b * kBf16Block;
      const __m512 xe = _mm512_loadu_ps(xj);
      const __m512 xo = _mm512_loadu_ps(xj + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][j] = _mm512_fmadd_ps(we[r], xe, acc[r][j]);
        acc[r][j] = _mm512_fmadd_ps(wo[r], xo, acc[r][j]);
      }
    }
  };
  for (int64_t b = 0; b < full; ++b) step(b, 0, false);
  if (rem > 0) step(full, TailMask(rem), true);
  StoreSums<R, N>(acc, y, ldy);
}

// R weight rows x N input rows, x rounded to bf16 (natural order).
template <int R, int N>
inline void TileDp(const uint16_t* xb, int64_t ldx, const uint16_t* w,
                   int64_t cols, float* y, int64_t ldy) {
  __m512 acc[R][N];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const int64_t full = cols / kBf16Block;
  const int64_t rem = cols - full * kBf16Block;
  auto step = [&](int64_t b, __mmask32 mask, bool masked) {
    __m512i wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint16_t* p = w + r * cols + b * kBf16Block;
      wv[r] =
          masked ? _mm512_maskz_loadu_epi16(mask, p) : _mm512_loadu_si512(p);
    }
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) {
      const __m512i xv = _mm512_loadu_si512(xb + j * ldx + b * kBf16Block);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][j] = _mm512_dpbf16_ps(acc[r][j], (__m512bh)wv[r], (__m512bh)xv);
      }
    }
  };
  for (int64_t b = 0; b < full; ++b) step(b, 0, false);
  if (rem > 0) step(full, TailMask(rem), true);
  StoreSums<R, N>(acc, y, ldy);
}

// Input rows per tile when n > 1 (R = 4 weight rows: 16 accumulators).
constexpr int kTileN = 4;

// Runs tile kernel T<R, N> over all n input rows for weight rows [r, r + R).
template <template <int, int> class Tile, int R, typename X, typename W>
inline void AllInputs(const X* x, int64_t n, int64_t ldx, const W* w,
                      int64_t cols, int64_t r, float* y, int64_t ldy) {
  const W* wr = w + r * cols;
  int64_t j = 0;
  for (; j + kTileN <= n; j += kTileN) {
    Tile<R, kTileN>::Run(x + j * ldx, ldx, wr, cols, y + j * ldy + r, ldy);
  }
  float* yj = y + j * ldy + r;
  const X* xj = x + j * ldx;
  switch (n - j) {
    case 3:
      Tile<R, 3>::Run(xj, ldx, wr, cols, yj, ldy);
      break;
    case 2:
      Tile<R, 2>::Run(xj, ldx, wr, cols, yj, ldy);
      break;
    case 1:
      Tile<R, 1>::Run(xj, ldx, wr, cols, yj, ldy);
      break;
    default:
      break;
  }
}

// R weight rows x N input rows, f32 weights and x (natural order, rows of
// stride ldx; the tail block is read with masks).
template <int R, int N>
inline void TileF32Weights(const float* x, int64_t ldx, const float* w,
                           int64_t cols, float* y, int64_t ldy) {
  __m512 acc[R][N];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const int64_t full = cols / 16;
  const int64_t rem = cols - full * 16;
  auto step = [&](int64_t c, __mmask16 mask, bool masked) {
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float* p = w + r * cols + c;
      wv[r] = masked ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
    }
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) {
      const float* p = x + j * ldx + c;
      const __m512 xv =
          masked ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][j] = _mm512_fmadd_ps(wv[r], xv, acc[r][j]);
      }
    }
  };
  for (int64_t b = 0; b < full; ++b) step(b * 16, 0, false);
  if (rem > 0) {
    step(full * 16, _cvtu32_mask16((1u << rem) - 1u), true);
  }
  StoreSums<R, N>(acc, y, ldy);
}

template <int R, int N>
struct F32WeightsTile {
  static void Run(const float* x, int64_t ldx, const float* w, int64_t cols,
                  float* y, int64_t ldy) {
    TileF32Weights<R, N>(x, ldx, w, cols, y, ldy);
  }
};

template <int R, int N>
struct F32Tile {
  static void Run(const float* x, int64_t ldx, const uint16_t* w, int64_t cols,
                  float* y, int64_t ldy) {
    TileF32<R, N>(x, ldx, w, cols, y, ldy);
  }
};

template <int R, int N>
struct DpTile {
  static void Run(const uint16_t* x, int64_t ldx, const uint16_t* w,
                  int64_t cols, float* y, int64_t ldy) {
    TileDp<R, N>(x, ldx, w, cols, y, ldy);
  }
};

template <template <int, int> class Tile, typename X, typename W>
void Rows(const X* x, int64_t n, int64_t ldx, const W* w, int64_t cols,
          int64_t r0, int64_t r1, float* y, int64_t ldy) {
  int64_t r = r0;
  if (n == 1) {
    // Matrix-vector: 8 rows at a time give 8 independent FMA chains.
    for (; r + 8 <= r1; r += 8)
      Tile<8, 1>::Run(x, ldx, w + r * cols, cols, y + r, ldy);
    for (; r + 4 <= r1; r += 4)
      Tile<4, 1>::Run(x, ldx, w + r * cols, cols, y + r, ldy);
    for (; r < r1; ++r) Tile<1, 1>::Run(x, ldx, w + r * cols, cols, y + r, ldy);
    return;
  }
  // Batched: each 4-row block of weights is loaded from memory once and
  // reused from L1 for every block of kTileN input rows.
  for (; r + 4 <= r1; r += 4) AllInputs<Tile, 4>(x, n, ldx, w, cols, r, y, ldy);
  for (; r < r1; ++r) AllInputs<Tile, 1>(x, n, ldx, w, cols, r, y, ldy);
}

}  // namespace

void F32RowsAvx512(const float* x, int64_t n, const float* w, int64_t cols,
                   int64_t r0, int64_t r1, float* y, int64_t ldy) {
  Rows<F32WeightsTile>(x, n, cols, w, cols, r0, r1, y, ldy);
}

void Bf16RowsAvx512(const float* xp, int64_t n, int64_t ldx, const uint16_t* w,
                    int64_t cols, int64_t r0, int64_t r1, float* y,
                    int64_t ldy) {
  Rows<F32Tile>(xp, n, ldx, w, cols, r0, r1, y, ldy);
}

void Bf16RowsAvx512Dp(const uint16_t* xb, int64_t n, int64_t ldx,
                      const uint16_t* w, int64_t cols, int64_t r0, int64_t r1,
                      float* y, int64_t ldy) {
  Rows<DpTile>(xb, n, ldx, w, cols, r0, r1, y, ldy);
}

}  // namespace latentkv::kernels::internal
