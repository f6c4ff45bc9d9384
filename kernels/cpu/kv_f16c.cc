// f16 -> f32 rows with F16C (GCC 12 does not vectorize _Float16 conversions:
// the portable loop converts one value per instruction). Built with -mf16c
// -mavx; called only after CpuHasF16c().
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/internal.h"

namespace latentkv::kernels::internal {

bool CpuHasF16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
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

}  // namespace latentkv::kernels::internal
