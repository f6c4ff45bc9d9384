// Inline AVX2 decoding of the q5_0 / q5_1 and k-quant blocks (layouts in
// common/dtype.h), shared by quant_k_avx2.cc (n = 1 products) and
// quant_k_dequant_avx2.cc (dequantized tiles and panels); quant_k.h
// describes the method. Include only from files built with -mavx2 -mfma
// -mf16c: it defines inline functions with AVX2 code, which must not be
// instantiated in files that run on CPUs without AVX2.
#ifndef LATENTKV_KERNELS_CPU_QUANT_K_FORMATS_H_
#define LATENTKV_KERNELS_CPU_QUANT_K_FORMATS_H_

#include <immintrin.h>

#include <cstdint>
#include <utility>

#include "common/dtype.h"

namespace latentkv::kernels::internal::quant_k {

// Calls f.template operator()<I>() for I = 0 .. N - 1 (compile-time chunk
// indices: the shifts below take immediates).
template <int N, typename F>
inline void Unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f.template operator()<I>(), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

inline float LoadF16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return _cvtsh_ss(v);
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

inline __m256i Load256(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

inline __m256i Bytes(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }

// Shifts each 16-bit lane left by S (right by -S when S < 0); the caller
// masks the bits that crossed from the neighbouring byte.
template <int S>
inline __m256i Shift16(__m256i v) {
  if constexpr (S > 0) return _mm256_slli_epi16(v, S);
  if constexpr (S < 0) return _mm256_srli_epi16(v, -S);
  return v;
}

// Level bytes of a nibble chunk: the low (kHigh false) or high nibbles.
template <bool kHigh>
inline __m256i Nibbles(__m256i b) {
  if constexpr (kHigh) b = _mm256_srli_epi16(b, 4);
  return _mm256_and_si256(b, Bytes(15));
}

// The 32 level bytes of a chunk as 4 x 8 f32. Interleaved (the n = 1
// order): v[k] lanes 0-3 are bytes 4k..4k+3, lanes 4-7 bytes 16 + 4k..;
// natural: v[k] = bytes 8k..8k+7 (one dword permute first).
inline __m256i ExpandCtrl(int k) {
  const char a = static_cast<char>(4 * k);
  return _mm256_setr_epi8(a, -1, -1, -1, a + 1, -1, -1, -1, a + 2, -1, -1, -1,
                          a + 3, -1, -1, -1, a, -1, -1, -1, a + 1, -1, -1, -1,
                          a + 2, -1, -1, -1, a + 3, -1, -1, -1);
}
inline void Expand(__m256i b, __m256 v[4]) {
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(b, ExpandCtrl(k)));
  }
}
inline void ExpandNatural(__m256i b, __m256 v[4]) {
  Expand(
      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)),
      v);
}

// Per-block scales of a format: sub-block j's S in lane j % 8 of s[j / 8],
// its offset M likewise in m (w = S * q - M).
struct Scales {
  __m256 s[2];
  __m256 m[2];
};

inline __m256 Lanes(__m256 v, int lane) {
  return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(lane));
}

// 16 bytes as f32 lanes of two vectors (bytes 0-7, 8-15), times d.
inline void BytesTimes(__m128i b, bool sign, float d, __m256 out[2]) {
  const __m128i hi = _mm_srli_si128(b, 8);
  const __m256i i0 = sign ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
  const __m256i i1 = sign ? _mm256_cvtepi8_epi32(hi) : _mm256_cvtepu8_epi32(hi);
  out[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(i0), _mm256_set1_ps(d));
  out[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(i1), _mm256_set1_ps(d));
}

// --- Formats: kElems per block, kBytes; Levels<C> (chunk C's 32 level
// bytes); Prepare (q5: the block's scale and offset; k-quants: its Scales,
// kSub elements per scale); q5's Accumulate (the n = 1 kernel's update). ---

// q5_0 / q5_1: 16 nibble bytes at qs, 32 high bits at qh.
inline __m256i Q5Levels(const uint8_t* qs, const uint8_t* qh) {
  const __m256i q = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  // Lane 0 the low nibbles (elements 0..15), lane 1 the high ones.
  const __m256i nib = _mm256_and_si256(
      _mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4)), Bytes(15));
  // Byte e gets qh's byte e / 8, then bit e % 8 of it becomes 16.
  // (vbroadcastss from memory: a load, no shuffle.)
  const __m256i h = _mm256_shuffle_epi8(
      _mm256_castps_si256(
          _mm256_broadcast_ss(reinterpret_cast<const float*>(qh))),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                       2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
  return _mm256_or_si256(nib, _mm256_and_si256(set, Bytes(16)));
}

// The f16 at p broadcast to 8 lanes (converted in a vector register).
inline __m256 BroadcastF16(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(v)));
}

struct Q5_0 {
  static constexpr int kElems = 32, kBytes = 22;
  static inline void Prepare(const uint8_t* b, float* s, float* m) {
    *s = LoadF16(b);
    *m = 16.0f * *s;
  }
  // acc + d * (q . x - 16 sum(x)), the sum as 8 lanes of sum / 8.
  static inline __m256 Accumulate(const uint8_t* b, __m256 dot, __m256 xs8,
                                  __m256 acc) {
    dot = _mm256_fnmadd_ps(_mm256_set1_ps(16.0f), xs8, dot);
    return _mm256_fmadd_ps(BroadcastF16(b), dot, acc);
  }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    return Q5Levels(b + 6, b + 2);
  }
};

struct Q5_1 {
  static constexpr int kElems = 32, kBytes = 24;
  static inline void Prepare(const uint8_t* b, float* s, float* m) {
    *s = LoadF16(b);
    *m = -LoadF16(b + 2);
  }
  // acc + d * (q . x) + m * sum(x).
  static inline __m256 Accumulate(const uint8_t* b, __m256 dot, __m256 xs8,
                                  __m256 acc) {
    acc = _mm256_fmadd_ps(BroadcastF16(b), dot, acc);
    return _mm256_fmadd_ps(BroadcastF16(b + 2), xs8, acc);
  }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    return Q5Levels(b + 8, b + 4);
  }
};

// q4_K / q5_K: 8 6-bit scales and mins from 12 bytes (common/dtype.h),
// four at a time in 32-bit words.
inline Scales ScalesK4(const uint8_t* b) {
  const uint32_t a = LoadU32(b + 4), c = LoadU32(b + 8), e = LoadU32(b + 12);
  const uint32_t sc_lo = a & 0x3F3F3F3Fu;
  const uint32_t mn_lo = c & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (e & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((e >> 4) & 0x0F0F0F0Fu) | ((c >> 2) & 0x30303030u);
  const __m128i sm =
      _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi),
                     static_cast<int>(mn_lo), static_cast<int>(mn_hi));
  __m256 sv[2], mv[2];
  BytesTimes(sm, false, LoadF16(b), sv);  // sv[0]: the 8 scales times d
  BytesTimes(_mm_srli_si128(sm, 8), false, LoadF16(b + 2), mv);
  Scales s;
  s.s[0] = sv[0];
  s.m[0] = mv[0];
  s.s[1] = s.m[1] = _mm256_setzero_ps();
  return s;
}

struct Q4_K {
  static constexpr int kElems = 256, kBytes = 144, kSub = 32;
  static inline Scales Prepare(const uint8_t* b) { return ScalesK4(b); }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    return Nibbles<C % 2 == 1>(Load256(b + 16 + 32 * (C / 2)));
  }
};

struct Q5_K {
  static constexpr int kElems = 256, kBytes = 176, kSub = 32;
  static inline Scales Prepare(const uint8_t* b) { return ScalesK4(b); }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    // Bit C of qh[l] becomes bit 4.
    const __m256i h =
        _mm256_and_si256(Shift16<4 - C>(Load256(b + 16)), Bytes(16));
    return _mm256_or_si256(Nibbles<C % 2 == 1>(Load256(b + 48 + 32 * (C / 2))),
                           h);
  }
};

// Sub-block scales of 16 elements: 16 values, 8 per vector.
inline Scales Scales16(const __m256 s[2], const __m256 m[2]) {
  Scales r;
  r.s[0] = s[0];
  r.s[1] = s[1];
  r.m[0] = m[0];
  r.m[1] = m[1];
  return r;
}

struct Q2_K {
  static constexpr int kElems = 256, kBytes = 84, kSub = 16;
  static inline Scales Prepare(const uint8_t* b) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15));
    __m256 s[2], m[2];
    BytesTimes(lo, false, LoadF16(b + 80), s);
    BytesTimes(hi, false, LoadF16(b + 82), m);
    return Scales16(s, m);
  }
  template <int C>  // h = C / 4, t = C % 4
  static inline __m256i Levels(const uint8_t* b) {
    return _mm256_and_si256(
        Shift16<-2 * (C % 4)>(Load256(b + 16 + 32 * (C / 4))), Bytes(3));
  }
};

struct Q3_K {
  static constexpr int kElems = 256, kBytes = 110, kSub = 16;
  static inline Scales Prepare(const uint8_t* b) {
    // 16 6-bit scales (common/dtype.h), four at a time in 32-bit words.
    const uint32_t a = LoadU32(b + 96), c = LoadU32(b + 100),
                   e = LoadU32(b + 104);
    const uint32_t w0 = (a & 0x0F0F0F0Fu) | ((e << 4) & 0x30303030u);
    const uint32_t w1 = (c & 0x0F0F0F0Fu) | ((e << 2) & 0x30303030u);
    const uint32_t w2 = ((a >> 4) & 0x0F0F0F0Fu) | (e & 0x30303030u);
    const uint32_t w3 = ((c >> 4) & 0x0F0F0F0Fu) | ((e >> 2) & 0x30303030u);
    // Minus the bias 32 as signed bytes.
    const __m128i sc =
        _mm_sub_epi8(_mm_setr_epi32(static_cast<int>(w0), static_cast<int>(w1),
                                    static_cast<int>(w2), static_cast<int>(w3)),
                     _mm_set1_epi8(32));
    __m256 s[2], m[2];
    BytesTimes(sc, true, LoadF16(b + 108), s);
    m[0] = _mm256_mul_ps(s[0], _mm256_set1_ps(4.0f));
    m[1] = _mm256_mul_ps(s[1], _mm256_set1_ps(4.0f));
    return Scales16(s, m);
  }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    constexpr int kH = C / 4, kT = C % 4;
    const __m256i low =
        _mm256_and_si256(Shift16<-2 * kT>(Load256(b + 32 + 32 * kH)), Bytes(3));
    // Bit 4h + t of hmask[l] becomes bit 2 (level + 4 when set).
    const __m256i h =
        _mm256_and_si256(Shift16<2 - (4 * kH + kT)>(Load256(b)), Bytes(4));
    return _mm256_or_si256(low, h);
  }
};

struct Q6_K {
  static constexpr int kElems = 256, kBytes = 210, kSub = 16;
  static inline Scales Prepare(const uint8_t* b) {
    __m256 s[2], m[2];
    BytesTimes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)), true,
               LoadF16(b + 208), s);
    m[0] = _mm256_mul_ps(s[0], _mm256_set1_ps(32.0f));
    m[1] = _mm256_mul_ps(s[1], _mm256_set1_ps(32.0f));
    return Scales16(s, m);
  }
  template <int C>
  static inline __m256i Levels(const uint8_t* b) {
    constexpr int kH = C / 4, kT = C % 4;
    const __m256i lo = Nibbles<(kT >= 2)>(Load256(b + 64 * kH + 32 * (kT % 2)));
    // Bits 2t, 2t + 1 of qh[32h + l] become bits 4, 5.
    const __m256i hi = _mm256_and_si256(
        Shift16<4 - 2 * kT>(Load256(b + 128 + 32 * kH)), Bytes(0x30));
    return _mm256_or_si256(lo, hi);
  }
};

// Calls f.template operator()<F>() with the format struct of `dtype`.
template <typename Fn>
void WithFormat(DType dtype, Fn&& f) {
  switch (dtype) {
    case DType::kQ5_0:
      f.template operator()<Q5_0>();
      return;
    case DType::kQ5_1:
      f.template operator()<Q5_1>();
      return;
    case DType::kQ2_K:
      f.template operator()<Q2_K>();
      return;
    case DType::kQ3_K:
      f.template operator()<Q3_K>();
      return;
    case DType::kQ4_K:
      f.template operator()<Q4_K>();
      return;
    case DType::kQ5_K:
      f.template operator()<Q5_K>();
      return;
    case DType::kQ6_K:
      f.template operator()<Q6_K>();
      return;
    default:
      __builtin_trap();
  }
}

}  // namespace latentkv::kernels::internal::quant_k

#endif  // LATENTKV_KERNELS_CPU_QUANT_K_FORMATS_H_
