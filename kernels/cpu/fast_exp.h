// Vectorizable exponential for the CPU kernels (attention softmax, SwiGLU).
#ifndef LATENTKV_KERNELS_CPU_FAST_EXP_H_
#define LATENTKV_KERNELS_CPU_FAST_EXP_H_

#include <cstdint>

namespace latentkv::kernels::internal {

// e^x for x <= 0, |relative error| < 3e-7 (Cephes' expf polynomial after a
// ln 2 range reduction); arguments below -87 give e^-87 instead of
// underflowing. Plain arithmetic, so `omp simd` loops vectorize it (with
// -fno-trapping-math, which kernels/CMakeLists.txt sets; a libm
// expf call per slot was a quarter of stories260K's decode step, and libm's
// expf per element most of SwiGLU's time).
// Its constants, shared with the AVX2 form (attention_tiled_avx2.cc).
namespace exp_poly {
inline constexpr float kMin = -87.0f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;
inline constexpr float kLn2Lo = -2.12194440e-4f;
// 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
inline constexpr float kRound = 12582912.0f;
// p(r), highest degree first.
inline constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f,
                                8.3334519073e-3f, 4.1665795894e-2f,
                                1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_poly

inline float ExpNonPositive(float x) {
  using namespace exp_poly;
  x = x < kMin ? kMin : x;
  const float t = x * kLog2e + kRound;
  const float n = t - kRound;  // round(x / ln 2)
  const float r = x - n * kLn2Hi - n * kLn2Lo;
  float p = kP[0];
#pragma GCC unroll 5
  for (int i = 1; i < 6; ++i) p = p * r + kP[i];
  const float e = p * r * r + r + 1.0f;
  // 2^n: n sits in t's low mantissa bits (as n + 0x400000 there).
  const int32_t bits = (__builtin_bit_cast(int32_t, t) - 0x4B400000 + 127)
                       << 23;
  return e * __builtin_bit_cast(float, bits);
}

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_FAST_EXP_H_
