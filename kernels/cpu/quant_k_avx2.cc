// AVX2 + FMA + F16C n = 1 products over q5_0 / q5_1 and the k-quants (see
// quant_k.h). Compiled with -mavx2 -mfma -mf16c; calls no inline library
// code, so none built with those flags leaks into the rest of the binary.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/gemv_avx2.h"
#include "kernels/cpu/quant_k.h"
#include "kernels/cpu/quant_k_formats.h"

namespace latentkv::kernels::internal {
namespace quant_k {
namespace {

using avx2::Sum8;
// --- n = 1 ---

// The 32 permuted x of a chunk (x[4]) against its level vectors.
inline __m256 ChunkDot(const __m256 v[4], const __m256 x[4]) {
  __m256 dot = _mm256_mul_ps(v[0], x[0]);
  dot = _mm256_fmadd_ps(v[1], x[1], dot);
  dot = _mm256_fmadd_ps(v[2], x[2], dot);
  return _mm256_fmadd_ps(v[3], x[3], dot);
}

// Each stream's next row, one prefetch per 64-byte line (blocks shorter
// than a line: every other block, so no line is skipped).
template <typename F, int S>
inline void PrefetchNextRows(const uint8_t* const p[S], int64_t row_bytes,
                             int64_t b) {
  if (F::kBytes < 64 && (b & 1) != 0) return;
  const int64_t off = b * F::kBytes;
#pragma GCC unroll 8
  for (int k = 0; k < S; ++k) {
#pragma GCC unroll 4
    for (int o = 0; o < F::kBytes; o += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(p[k] + row_bytes + off + o),
                   _MM_HINT_T0);
    }
  }
}

// Rows r0 + k * len + i (k < S) at once, as quant_avx2.cc's Streams: S
// sequential streams. Per super-block, every stream's scales go to a small
// array (broadcast from memory later: loads, not shuffles), its offsets
// times the sub-block sums of x are subtracted lane-wise from its
// accumulator (the lanes are summed at the end anyway), then chunk by chunk
// the S streams' dot products share the chunk's x registers.
template <typename F, int S>
void Streams(const float* prep, const uint8_t* w, int64_t cols, int64_t r0,
             int64_t r1, float* y) {
  static_assert(F::kElems == 256);
  const float* xp = prep;
  const float* xs = prep + cols;
  const int64_t blocks = cols / F::kElems;
  const int64_t row_bytes = blocks * F::kBytes;
  const int64_t len = (r1 - r0) / S;
  constexpr int kSubs = F::kElems / F::kSub;
  for (int64_t i = 0; i < len; ++i) {
    const uint8_t* p[S];
    __m256 acc[S];
    for (int k = 0; k < S; ++k) {
      p[k] = w + (r0 + k * len + i) * row_bytes;
      acc[k] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      PrefetchNextRows<F, S>(p, row_bytes, b);
      const int64_t off = b * F::kBytes;
      const float* xb = xp + b * F::kElems;
      const float* sb = xs + b * kSubs;
      alignas(32) float scale[S][16];
#pragma GCC unroll 8
      for (int k = 0; k < S; ++k) {
        const Scales sc = F::Prepare(p[k] + off);
        _mm256_store_ps(scale[k], sc.s[0]);
        acc[k] = _mm256_fnmadd_ps(sc.m[0], _mm256_loadu_ps(sb), acc[k]);
        if constexpr (kSubs == 16) {
          _mm256_store_ps(scale[k] + 8, sc.s[1]);
          acc[k] = _mm256_fnmadd_ps(sc.m[1], _mm256_loadu_ps(sb + 8), acc[k]);
        }
      }
      Unroll<F::kElems / 32>([&]<int C>() {
        const __m256 x[4] = {_mm256_loadu_ps(xb + 32 * C),
                             _mm256_loadu_ps(xb + 32 * C + 8),
                             _mm256_loadu_ps(xb + 32 * C + 16),
                             _mm256_loadu_ps(xb + 32 * C + 24)};
#pragma GCC unroll 8
        for (int k = 0; k < S; ++k) {
          __m256 v[4];
          Expand(F::template Levels<C>(p[k] + off), v);
          const __m256 dot = ChunkDot(v, x);
          __m256 s;
          if constexpr (F::kSub == 32) {
            s = _mm256_broadcast_ss(&scale[k][C]);
          } else {
            // Lanes 0-3 hold sub-block 2C's elements, 4-7 sub-block 2C + 1's.
            s = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64(
                    reinterpret_cast<const __m128i*>(&scale[k][2 * C])))),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
          }
          acc[k] = _mm256_fmadd_ps(s, dot, acc[k]);
        }
      });
    }
    for (int k = 0; k < S; ++k) y[r0 + k * len + i] = Sum8(acc[k]);
  }
  if constexpr (S > 1) Streams<F, 1>(prep, w, cols, r0 + S * len, r1, y);
}

// The same for the 32-element formats (q5_0, q5_1): a block is one chunk.
template <typename F, int S>
void Streams32(const float* prep, const uint8_t* w, int64_t cols, int64_t r0,
               int64_t r1, float* y) {
  static_assert(F::kElems == 32);
  const float* xp = prep;
  const float* xs = prep + cols;
  const int64_t blocks = cols / 32;
  const int64_t row_bytes = blocks * F::kBytes;
  const int64_t len = (r1 - r0) / S;
  for (int64_t i = 0; i < len; ++i) {
    const uint8_t* p[S];
    __m256 acc[S];
    for (int k = 0; k < S; ++k) {
      p[k] = w + (r0 + k * len + i) * row_bytes;
      acc[k] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      PrefetchNextRows<F, S>(p, row_bytes, b);
      const int64_t off = b * F::kBytes;
      const float* xb = xp + 32 * b;
      const __m256 x[4] = {_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8),
                           _mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)};
      // The block's sum of x over 8, in every lane: lane-wise offsets sum
      // back to offset * sum(x).
      const __m256 xs8 = _mm256_broadcast_ss(xs + b);
#pragma GCC unroll 8
      for (int k = 0; k < S; ++k) {
        const uint8_t* blk = p[k] + off;
        __m256 v[4];
        Expand(F::template Levels<0>(blk), v);
        acc[k] = F::Accumulate(blk, ChunkDot(v, x), xs8, acc[k]);
      }
    }
    for (int k = 0; k < S; ++k) y[r0 + k * len + i] = Sum8(acc[k]);
  }
  if constexpr (S > 1) Streams32<F, 1>(prep, w, cols, r0 + S * len, r1, y);
}

int SubElems(DType dtype) {
  return dtype == DType::kQ2_K || dtype == DType::kQ3_K || dtype == DType::kQ6_K
             ? 16
             : 32;
}

}  // namespace
}  // namespace quant_k

int64_t QuantKGemvPrepFloats(DType dtype, int64_t cols) {
  return cols + cols / quant_k::SubElems(dtype);
}

void QuantKGemvPrepare(const float* x, DType dtype, int64_t cols, float* prep) {
  float* xs = prep + cols;
  const int sub = quant_k::SubElems(dtype);
  for (int64_t c = 0; c < cols; c += 32, prep += 32) {
    for (int k = 0; k < 4; ++k) {
      for (int i = 0; i < 4; ++i) {
        prep[8 * k + i] = x[c + 4 * k + i];
        prep[8 * k + 4 + i] = x[c + 16 + 4 * k + i];
      }
    }
  }
  // The 32-element formats spread the sum over 8 lanes (Streams32).
  const float scale =
      dtype == DType::kQ5_0 || dtype == DType::kQ5_1 ? 0.125f : 1.0f;
  for (int64_t j = 0; j < cols / sub; ++j) {
    float t = 0.0f;
    for (int i = 0; i < sub; ++i) t += x[j * sub + i];
    xs[j] = t * scale;
  }
}

void QuantKGemvAvx2(const float* prep, const uint8_t* w, DType dtype,
                    int64_t cols, int64_t r0, int64_t r1, float* y) {
  quant_k::WithFormat(dtype, [&]<typename F>() {
    if constexpr (F::kElems == 32) {
      quant_k::Streams32<F, kGemvStreams>(prep, w, cols, r0, r1, y);
    } else {
      quant_k::Streams<F, kGemvStreams>(prep, w, cols, r0, r1, y);
    }
  });
}

}  // namespace latentkv::kernels::internal
