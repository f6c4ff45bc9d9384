// AVX2 + FMA kernels (see gemv_avx2.h). Compiled with
// -mavx2 -mfma; includes nothing but intrinsics (and avx2_util.h) so no
// inline library code built with those flags leaks into the rest of the
// binary.
#include "kernels/cpu/gemv_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/avx2_util.h"

namespace latentkv::kernels::internal {
namespace {

using avx2::Load8;
using avx2::Sum8;
using avx2::ToF32;

// R weight rows (bf16 or f32) x N inputs over kc columns: R * N
// accumulators, R weight vectors and one x vector fit the 16 ymm registers
// (R = 4, N = 2: 13; R = 3, N = 4: 16). The tile's row r is weight row
// r * gap (w + r * gap * ldw); it writes (or, when `accumulate`, adds to)
// y[j * ldy + r * gap], and prefetches row r * gap + ahead.
template <int R, int N, typename T>
inline void Tile(const float* x, int64_t ldx, const T* w, int64_t ldw,
                 int64_t gap, int64_t ahead, int64_t kc, float* y, int64_t ldy,
                 bool accumulate) {
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const int64_t full = kc / 8 * 8;
  auto step = [&](int64_t c) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = Load8(w + r * gap * ldw + c);
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
  // software prefetch per row and line: the same line of the row `ahead`
  // (rows are short, e.g. 1.5 KiB, so "further along this row" would fetch
  // what this tile reads anyway).
  constexpr int64_t kLine = 64 / sizeof(T);
  for (; c + kLine <= full; c += kLine) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(
          reinterpret_cast<const char*>(w + (r * gap + ahead) * ldw + c),
          _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t u = 0; u < kLine; u += 8) step(c + u);
  }
  for (; c < full; c += 8) step(c);
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) {
      float s = Sum8(acc[r][j]);
      for (int64_t c = full; c < kc; ++c) {
        s += ToF32(w[r * gap * ldw + c]) * x[j * ldx + c];
      }
      float& out = y[j * ldy + r * gap];
      out = accumulate ? out + s : s;
    }
  }
}

// Weight rows r, r + gap, ..., r + (R - 1) * gap against every input, N at
// a time, over columns [c0, c0 + kc).
template <int R, int N, typename T>
inline void Rows(const float* x, int64_t n, int64_t ldx, const T* w,
                 int64_t cols, int64_t c0, int64_t kc, int64_t r, int64_t gap,
                 int64_t ahead, float* y, int64_t ldy) {
  const T* wr = w + r * cols + c0;
  const bool acc = c0 > 0;
  int64_t j = 0;
  for (; j + N <= n; j += N) {
    Tile<R, N>(x + j * ldx + c0, ldx, wr, cols, gap, ahead, kc, y + j * ldy + r,
               ldy, acc);
  }
  for (; j < n; ++j) {
    Tile<R, 1>(x + j * ldx + c0, ldx, wr, cols, gap, ahead, kc, y + j * ldy + r,
               ldy, acc);
  }
}

// Inputs below which the tiles read their rows as streams: with few inputs
// per weight row the tiles wait on memory like the n = 1 kernel does, with
// more the arithmetic hides it and adjacent rows measured faster
// (bench/RESULTS.md).
inline constexpr int64_t kStreamTilesBelow = 8;

// R x N tiles over rows [r0, r0 + R * len), len = (r1 - r0) / R. Few inputs:
// R sequential streams, tile i taking row i of each of the R equal
// sub-ranges (the reason is the n = 1 kernel's, GemvStreams below) and
// prefetching each stream's next row. Otherwise R adjacent rows per tile,
// prefetching the next tile's. Returns the first row left over.
template <int R, int N, typename T>
int64_t Tiles(const float* x, int64_t n, int64_t ldx, const T* w, int64_t cols,
              int64_t c0, int64_t kc, int64_t r0, int64_t r1, float* y,
              int64_t ldy) {
  const int64_t len = (r1 - r0) / R;
  const bool streams = n < kStreamTilesBelow;
  for (int64_t i = 0; i < len; ++i) {
    if (streams) {
      Rows<R, N>(x, n, ldx, w, cols, c0, kc, r0 + i, len, 1, y, ldy);
    } else {
      Rows<R, N>(x, n, ldx, w, cols, c0, kc, r0 + R * i, 1, R, y, ldy);
    }
  }
  return r0 + R * len;
}

// Columns per chunk such that one chunk of all n inputs (n * kc floats) stays
// within about 192 KiB of the 512 KiB L2, where the tiles re-read it once per
// weight tile; a multiple of 64 columns so tails fall in the last chunk.
inline int64_t ChunkCols(int64_t n, int64_t cols) {
  constexpr int64_t kXBytes = 192 << 10;
  const int64_t chunks =
      std::max<int64_t>(1, (n * cols * 4 + kXBytes - 1) / kXBytes);
  return chunks == 1 ? cols : (cols / chunks + 63) / 64 * 64;
}

// 3 x 4 tiles (12 accumulators, 3 weight vectors, one x vector: all 16 ymm
// registers; 12 FMAs per 7 loads) once there are 4 inputs: at n = 64 they
// gave 104-110 GFLOP/s in cache against 82-87 for 4 x 2 tiles, and 309-313
// tok/s at 64 decode streams against 244-289 (bench/RESULTS.md).
template <typename T>
void RowsAll(const float* x, int64_t n, int64_t ldx, const T* w, int64_t cols,
             int64_t r0, int64_t r1, float* y, int64_t ldy) {
  const int64_t step = ChunkCols(n, cols);
  for (int64_t c0 = 0; c0 < cols; c0 += step) {
    const int64_t kc = std::min(step, cols - c0);
    int64_t r = r0;
    if (n >= 4) r = Tiles<3, 4>(x, n, ldx, w, cols, c0, kc, r, r1, y, ldy);
    r = Tiles<4, 2>(x, n, ldx, w, cols, c0, kc, r, r1, y, ldy);
    for (; r < r1; ++r) Rows<1, 2>(x, n, ldx, w, cols, c0, kc, r, 1, 1, y, ldy);
  }
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

// n = 1 on the streams kernel, larger n on the tiles. The stream tiles at
// n = 1 (Tiles<4, 2>) would do the same reads and sums, but measured slower:
// one 110M token's f32 products (BM_DecodeProducts110M, seven alternating
// runs) at 48.6-67.7 tok/s against 61.0-68.5 here.
template <typename T>
void RowsOrStreams(const float* x, int64_t n, int64_t ldx, const T* w,
                   int64_t cols, int64_t r0, int64_t r1, float* y,
                   int64_t ldy) {
  if (n == 1) {
    GemvStreams<kGemvStreams>(x, w, cols, r0, r1, y);
  } else {
    RowsAll(x, n, ldx, w, cols, r0, r1, y, ldy);
  }
}

}  // namespace

void Bf16RowsAvx2(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  RowsOrStreams(x, n, ldx, w, cols, r0, r1, y, ldy);
}

void F32RowsAvx2(const float* x, int64_t n, int64_t ldx, const float* w,
                 int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  RowsOrStreams(x, n, ldx, w, cols, r0, r1, y, ldy);
}

}  // namespace latentkv::kernels::internal
