// KV pages to f32, 8 values at a time: f16 with F16C (GCC 12 does not
// vectorize _Float16 conversions) and fp8 e4m3 with AVX2 bit arithmetic
// (the portable path looks each byte up in a table). Built with -mavx2
// -mf16c; called only after CpuHasF16c() / CpuHasAvx2Fma().
#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/internal.h"

namespace latentkv::kernels::internal {

bool CpuHasF16c() {
  static const bool has = [] {
    // CPUID leaf 1 (clang 14 has no "f16c" for __builtin_cpu_supports).
    unsigned a = 0, b = 0, c = 0, d = 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) &&
           (c & bit_F16C) != 0;
  }();
  return has;
}

void F16ToF32F16c(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

void F8E4M3ToF32Avx2(const uint8_t* src, int64_t n, float scale, float* dst) {
  // An e4m3 code's 7 magnitude bits placed at f32 bits 20..26 make the f32
  // 2^(e - 127) * (1 + m / 8) (e > 0), or for e = 0 the f32 denormal
  // m * 2^-129: both are the e4m3 value times 2^-120, exactly. Multiplying
  // by 2^120 (exact) then by the head's scale (one rounding, as the table
  // path) gives the value; code 0x7f (NaN) is patched in.
  const __m256 rebias = _mm256_set1_ps(0x1p120f);
  const __m256 mul = _mm256_set1_ps(scale);
  const __m256i mag_mask = _mm256_set1_epi32(0x7f);
  const __m256 nan = _mm256_set1_ps(__builtin_nanf(""));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
    const __m256i mag = _mm256_and_si256(x, mag_mask);
    const __m256i sign =
        _mm256_slli_epi32(_mm256_andnot_si256(mag_mask, x), 24);
    const __m256i bits = _mm256_or_si256(_mm256_slli_epi32(mag, 20), sign);
    __m256 v =
        _mm256_mul_ps(_mm256_mul_ps(_mm256_castsi256_ps(bits), rebias), mul);
    const __m256 is_nan =
        _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, mag_mask));
    v = _mm256_blendv_ps(v, nan, is_nan);
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < n; ++i) dst[i] = F8E4M3ToF32(src[i]) * scale;
}

}  // namespace latentkv::kernels::internal
