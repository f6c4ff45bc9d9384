// Inline AVX2 helpers of the AVX2 kernels (gemv_avx2.cc, quant_avx2.cc,
// quant_k_avx2.cc, quant_k_dequant_avx2.cc).
// Include only from files built with -mavx2 -mfma: it
// defines inline functions with AVX2 code, which must not be instantiated in
// files that run on CPUs without AVX2.
#ifndef LATENTKV_KERNELS_CPU_AVX2_UTIL_H_
#define LATENTKV_KERNELS_CPU_AVX2_UTIL_H_

#include <immintrin.h>

#include <cstdint>

namespace latentkv::kernels::internal::avx2 {

// 8 weights as f32 (a bf16 is the high half of an f32).
inline __m256 Load8(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }

// Horizontal sum of 8 lanes.
inline float Sum8(__m256 v) {
  const __m128 s =
      _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Largest of 8 lanes (NaN lanes as _mm_max_ps orders them).
inline float Max8(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

// In-register transpose: v[i] lane c becomes v[c] lane i.
inline void Transpose8(__m256 v[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

inline float ToF32(uint16_t b) {
  return __builtin_bit_cast(float, uint32_t{b} << 16);
}
inline float ToF32(float f) { return f; }

}  // namespace latentkv::kernels::internal::avx2

#endif  // LATENTKV_KERNELS_CPU_AVX2_UTIL_H_
