// AVX2 + FMA + F16C kernels for block-quantized weights (see quant.h).
// Compiled with -mavx2 -mfma -mf16c; calls no inline library code, so none
// built with those flags leaks into the rest of the binary.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/gemv_avx2.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/quant_k.h"

namespace latentkv::kernels::internal {
namespace {

using avx2::Sum8;
using avx2::Transpose8;

inline float LoadF16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return _cvtsh_ss(v);
}

// Per-format block layout and decoding. Each block's 32 quantized values q
// are loaded as four vectors of f32 integers: v[0] = q[0..7], v[1] = q[8..15],
// v[2] = q[16..23], v[3] = q[24..31]. A weight is q * d + m: q8_0 m = 0, q4_0
// q is the raw nibble (0..15) and m = -8d, q4_1 m is stored.
template <DType T>
struct Fmt;

template <>
struct Fmt<DType::kQ8_0> {
  static constexpr int64_t kBytes = 34;
  static constexpr bool kHasM = false;
  // q[8k .. 8k + 7] as f32.
  static inline __m256 Slice(const uint8_t* b, int k) {
    const __m128i q =
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * k));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
  static inline void Load(const uint8_t* b, __m256 v[4]) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) v[k] = Slice(b, k);
  }
  static inline float D(const uint8_t* b) { return LoadF16(b); }
  static inline float M(const uint8_t*, float) { return 0.0f; }
};

// Elements 8k .. 8k + 7 of the nibbles at qs (k < 2: low nibbles of bytes
// 8k.., else high nibbles of bytes 8(k - 2)..) as f32.
inline __m256 NibbleSlice(const uint8_t* qs, int k) {
  const __m256i t = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * (k & 1))));
  return _mm256_cvtepi32_ps(k < 2 ? _mm256_and_si256(t, _mm256_set1_epi32(15))
                                  : _mm256_srli_epi32(t, 4));
}

// Nibbles of 16 bytes at qs: low nibbles are elements 0..15, high 16..31.
inline void LoadNibbles(const uint8_t* qs, __m256 v[4]) {
  const __m256i lo_mask = _mm256_set1_epi32(15);
  const __m256i a = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
  const __m256i b = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8)));
  v[0] = _mm256_cvtepi32_ps(_mm256_and_si256(a, lo_mask));
  v[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b, lo_mask));
  v[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
  v[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
}

// The 4-bit formats: f16 d at byte 0, 16 nibble bytes at `kQs`.
template <int64_t kQs>
struct NibbleFmt {
  static constexpr int64_t kBytes = kQs + 16;
  static constexpr bool kHasM = true;
  static inline __m256 Slice(const uint8_t* b, int k) {
    return NibbleSlice(b + kQs, k);
  }
  static inline void Load(const uint8_t* b, __m256 v[4]) {
    LoadNibbles(b + kQs, v);
  }
  static inline float D(const uint8_t* b) { return LoadF16(b); }
};

template <>
struct Fmt<DType::kQ4_0> : NibbleFmt<2> {
  static inline float M(const uint8_t*, float d) { return -8.0f * d; }
};

template <>
struct Fmt<DType::kQ4_1> : NibbleFmt<4> {  // f16 m at byte 2
  static inline float M(const uint8_t* b, float) { return LoadF16(b + 2); }
};

// Row i of each of the S sub-ranges of [r0, r1) at once (S sequential
// streams, each prefetching its next row), as gemv_avx2.cc's GemvStreams:
// per block, acc += d * (q . x) and ms += m * xsum[b].
template <DType T, int S>
void Streams(const float* x, const float* xsum, const uint8_t* w, int64_t cols,
             int64_t r0, int64_t r1, float* y) {
  using F = Fmt<T>;
  const int64_t blocks = cols / 32;
  const int64_t row_bytes = blocks * F::kBytes;
  const int64_t len = (r1 - r0) / S;
  for (int64_t i = 0; i < len; ++i) {
    const uint8_t* p[S];
    __m256 acc[S];
    float ms[S];
    for (int k = 0; k < S; ++k) {
      p[k] = w + (r0 + k * len + i) * row_bytes;
      acc[k] = _mm256_setzero_ps();
      ms[k] = 0.0f;
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t off = b * F::kBytes;
      // About one prefetch per 64-byte line of each stream's next row.
      if ((b & 1) == 0 || F::kBytes > 32) {
#pragma GCC unroll 8
        for (int k = 0; k < S; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(p[k] + row_bytes + off),
                       _MM_HINT_T0);
        }
      }
      const float* xb = x + 32 * b;
      const __m256 x0 = _mm256_loadu_ps(xb);
      const __m256 x1 = _mm256_loadu_ps(xb + 8);
      const __m256 x2 = _mm256_loadu_ps(xb + 16);
      const __m256 x3 = _mm256_loadu_ps(xb + 24);
#pragma GCC unroll 8
      for (int k = 0; k < S; ++k) {
        const uint8_t* blk = p[k] + off;
        __m256 v[4];
        F::Load(blk, v);
        __m256 dot = _mm256_mul_ps(v[0], x0);
        dot = _mm256_fmadd_ps(v[1], x1, dot);
        dot = _mm256_fmadd_ps(v[2], x2, dot);
        dot = _mm256_fmadd_ps(v[3], x3, dot);
        const float d = F::D(blk);
        acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d), dot, acc[k]);
        if constexpr (F::kHasM) ms[k] += F::M(blk, d) * xsum[b];
      }
    }
    for (int k = 0; k < S; ++k) y[r0 + k * len + i] = Sum8(acc[k]) + ms[k];
  }
  // The rows that do not divide into S streams, as one stream.
  if constexpr (S > 1) Streams<T, 1>(x, xsum, w, cols, r0 + S * len, r1, y);
}

// The q4_0 n = 1 kernel decodes nibbles without int-to-float conversions:
// a nibble q placed in mantissa bits 19..22 of 1.0f (0x3F800000 | q << 19)
// is the float f = 1 + q / 16, so a weight (q - 8) d is d (16f - 24) and a
// block's sum is d * (f . 16x - 24 sum(x)). The f are built as 16-bit
// halves (0x3F80 | q << 3) of all 16 bytes at once and split into the even
// and odd elements of each half (even: dword << 16, odd: even halves
// zeroed), so QuantGemvPrepareAvx2 stores each block's x scaled by 16 in
// that order x': x[0, 2, .., 14], x[1, 3, .., 15], x[16, 18, .., 30],
// x[17, 19, .., 31]; then 8 lane sums -1.5 * (x'[l] + x'[l + 8] +
// x'[l + 16] + x'[l + 24]), the dot's first addend (each lane holds the same
// 4 weights' terms, so the -24 d sum(x) offset cancels within a lane).
constexpr int64_t kPrepBlockFloats = 40;

// The 16 bytes at qs as 16-bit lanes by one in-lane vpshufb of a 128-bit
// broadcast (faster here than vpmovzxbw, which crosses lanes), then the
// four vectors of f bit patterns: v[0] / v[1] elements 0..15 even / odd,
// v[2] / v[3] elements 16..31 even / odd.
inline void Nibbles(const uint8_t* qs, __m256i v[4]) {
  const __m256i ctrl = _mm256_setr_epi8(0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5,
                                        -1, 6, -1, 7, -1, 8, -1, 9, -1, 10, -1,
                                        11, -1, 12, -1, 13, -1, 14, -1, 15, -1);
  const __m256i w = _mm256_shuffle_epi8(
      _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs))),
      ctrl);
  const __m256i one = _mm256_set1_epi16(0x3F80);
  // Low nibble: w << 3 puts it in bits 3..6; the high nibble's bits 7..10
  // are set by the OR anyway.
  const __m256i lo = _mm256_or_si256(_mm256_slli_epi16(w, 3), one);
  const __m256i hi = _mm256_or_si256(
      _mm256_and_si256(_mm256_srli_epi16(w, 1), _mm256_set1_epi16(0x78)), one);
  // Odd elements: the even halves cleared (a blend, which the compiler
  // does not distribute over the ORs above as it does an AND).
  const __m256i zero = _mm256_setzero_si256();
  v[0] = _mm256_slli_epi32(lo, 16);
  v[1] = _mm256_blend_epi16(lo, zero, 0x55);
  v[2] = _mm256_slli_epi32(hi, 16);
  v[3] = _mm256_blend_epi16(hi, zero, 0x55);
}

// q4_0, n = 1: the same S streams as Streams over the nibble floats above.
template <int S>
void StreamsQ4_0(const float* prep, const uint8_t* w, int64_t cols, int64_t r0,
                 int64_t r1, float* y) {
  using F = Fmt<DType::kQ4_0>;
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
      const int64_t off = b * F::kBytes;
      if ((b & 1) == 0) {
#pragma GCC unroll 8
        for (int k = 0; k < S; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(p[k] + row_bytes + off),
                       _MM_HINT_T0);
        }
      }
      const float* xb = prep + kPrepBlockFloats * b;
      const __m256 x0 = _mm256_loadu_ps(xb);
      const __m256 x1 = _mm256_loadu_ps(xb + 8);
      const __m256 x2 = _mm256_loadu_ps(xb + 16);
      const __m256 x3 = _mm256_loadu_ps(xb + 24);
#pragma GCC unroll 8
      for (int k = 0; k < S; ++k) {
        const uint8_t* blk = p[k] + off;
        __m256i v[4];
        Nibbles(blk + 2, v);
        __m256 dot = _mm256_fmadd_ps(_mm256_castsi256_ps(v[0]), x0,
                                     _mm256_loadu_ps(xb + 32));
        dot = _mm256_fmadd_ps(_mm256_castsi256_ps(v[1]), x1, dot);
        dot = _mm256_fmadd_ps(_mm256_castsi256_ps(v[2]), x2, dot);
        dot = _mm256_fmadd_ps(_mm256_castsi256_ps(v[3]), x3, dot);
        // The f16 scale converted in a vector register (no scalar round
        // trip through a general register).
        const __m128 d = _mm_cvtph_ps(_mm_loadu_si32(blk));
        acc[k] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), dot, acc[k]);
      }
    }
    for (int k = 0; k < S; ++k) y[r0 + k * len + i] = Sum8(acc[k]);
  }
  if constexpr (S > 1) StreamsQ4_0<1>(prep, w, cols, r0 + S * len, r1, y);
}

template <DType T>
void Dequant(const uint8_t* w, int64_t cols, int64_t r0, int64_t r1,
             float* dst) {
  using F = Fmt<T>;
  const int64_t blocks = cols / 32;
  const uint8_t* p = w + r0 * blocks * F::kBytes;
  const int64_t n = (r1 - r0) * blocks;
  for (int64_t b = 0; b < n; ++b, p += F::kBytes, dst += 32) {
    __m256 v[4];
    F::Load(p, v);
    const float d = F::D(p);
    const __m256 dv = _mm256_set1_ps(d);
    if constexpr (F::kHasM) {
      // Exact like the scalar q * d + m: q * d is exact in f32.
      const __m256 mv = _mm256_set1_ps(F::M(p, d));
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + 8 * k, _mm256_fmadd_ps(v[k], dv, mv));
      }
    } else {
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(v[k], dv));
      }
    }
  }
}

// Rows [r0, r1) into 16-row panels: per half panel (8 rows) and block, each
// 8-column slice of the 8 rows dequantized (q * d + m, as Dequant) and
// transposed so each column's 8 values are stored together.
template <DType T>
void DequantPanels(const uint8_t* w, int64_t cols, int64_t r0, int64_t r1,
                   float* dst) {
  using F = Fmt<T>;
  const int64_t blocks = cols / 32;
  const int64_t row_bytes = blocks * F::kBytes;
  for (int64_t p = r0; p < r1; p += 16, dst += cols * 16) {
    for (int half = 0; half < 2; ++half) {
      const int64_t rb = p + 8 * half;
      const int64_t valid = rb >= r1 ? 0 : (r1 - rb < 8 ? r1 - rb : 8);
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* blk[8];
        __m256 dv[8], mv[8];
        for (int i = 0; i < 8; ++i) {
          blk[i] =
              i < valid ? w + (rb + i) * row_bytes + b * F::kBytes : nullptr;
          const float d = i < valid ? F::D(blk[i]) : 0.0f;
          dv[i] = _mm256_set1_ps(d);
          mv[i] =
              _mm256_set1_ps(F::kHasM && i < valid ? F::M(blk[i], d) : 0.0f);
        }
        for (int k = 0; k < 4; ++k) {
          __m256 v[8];
          for (int i = 0; i < 8; ++i) {
            if (i >= valid) {
              v[i] = _mm256_setzero_ps();
            } else if constexpr (F::kHasM) {
              v[i] = _mm256_fmadd_ps(F::Slice(blk[i], k), dv[i], mv[i]);
            } else {
              v[i] = _mm256_mul_ps(F::Slice(blk[i], k), dv[i]);
            }
          }
          Transpose8(v);
          float* out = dst + (32 * b + 8 * k) * 16 + 8 * half;
          for (int c = 0; c < 8; ++c) _mm256_storeu_ps(out + c * 16, v[c]);
        }
      }
    }
  }
}

// Calls f.template operator()<D>() with D = dtype, a quantized type (the
// callers pass nothing else).
template <typename F>
void WithQuantType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kQ8_0:
      f.template operator()<DType::kQ8_0>();
      return;
    case DType::kQ4_0:
      f.template operator()<DType::kQ4_0>();
      return;
    case DType::kQ4_1:
      f.template operator()<DType::kQ4_1>();
      return;
    default:
      __builtin_trap();
  }
}

}  // namespace

void DequantPanelsAvx2(const uint8_t* w, DType dtype, int64_t cols, int64_t r0,
                       int64_t r1, float* dst) {
  if (IsQuantK(dtype)) {
    QuantKDequantPanelsAvx2(w, dtype, cols, r0, r1, dst);
    return;
  }
  WithQuantType(dtype,
                [&]<DType D>() { DequantPanels<D>(w, cols, r0, r1, dst); });
}

int64_t QuantGemvPrepFloats(DType dtype, int64_t cols) {
  if (IsQuantK(dtype)) return QuantKGemvPrepFloats(dtype, cols);
  switch (dtype) {
    case DType::kQ4_0:
      return cols / 32 * kPrepBlockFloats;
    case DType::kQ4_1:
      return cols / 32;
    default:
      return 0;
  }
}

void QuantGemvPrepareAvx2(const float* x, DType dtype, int64_t cols,
                          float* prep) {
  if (IsQuantK(dtype)) {
    QuantKGemvPrepare(x, dtype, cols, prep);
    return;
  }
  const int64_t blocks = cols / 32;
  if (dtype == DType::kQ4_1) {  // sum(x) per block for m
    for (int64_t b = 0; b < blocks; ++b) {
      float t = 0.0f;
      for (int j = 0; j < 32; ++j) t += x[b * 32 + j];
      prep[b] = t;
    }
    return;
  }
  if (dtype != DType::kQ4_0) return;
  for (int64_t b = 0; b < blocks; ++b, x += 32, prep += kPrepBlockFloats) {
    for (int half = 0; half < 2; ++half) {
      for (int j = 0; j < 8; ++j) {
        prep[16 * half + j] = 16.0f * x[16 * half + 2 * j];
        prep[16 * half + 8 + j] = 16.0f * x[16 * half + 2 * j + 1];
      }
    }
    for (int l = 0; l < 8; ++l) {
      prep[32 + l] =
          -1.5f * (prep[l] + prep[l + 8] + prep[l + 16] + prep[l + 24]);
    }
  }
}

void QuantGemvAvx2(const float* x, const float* prep, const uint8_t* w,
                   DType dtype, int64_t cols, int64_t r0, int64_t r1,
                   float* y) {
  if (IsQuantK(dtype)) {
    QuantKGemvAvx2(prep, w, dtype, cols, r0, r1, y);
    return;
  }
  WithQuantType(dtype, [&]<DType D>() {
    if constexpr (D == DType::kQ4_0) {
      StreamsQ4_0<kGemvStreams>(prep, w, cols, r0, r1, y);
    } else {
      Streams<D, kGemvStreams>(x, prep, w, cols, r0, r1, y);
    }
  });
}

void DequantRowsAvx2(const uint8_t* w, DType dtype, int64_t cols, int64_t r0,
                     int64_t r1, float* dst) {
  if (IsQuantK(dtype)) {
    QuantKDequantRowsAvx2(w, dtype, cols, r0, r1, dst);
    return;
  }
  WithQuantType(dtype, [&]<DType D>() { Dequant<D>(w, cols, r0, r1, dst); });
}

}  // namespace latentkv::kernels::internal
