// Compute-peak probes for the benchmarks' rooflines (ops.h
// MeasureComputePeak). Built with -mavx2 -mfma; call only when
// internal::CpuHasAvx2Fma() is true.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/internal.h"

namespace latentkv::kernels::internal {

double F32FmaLoopAvx2(int64_t iterations) {
  // 12 independent accumulators: enough to cover the FMA latency (4-5
  // cycles) on both FMA pipes of the cores this runs on.
  __m256 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(0.001f * k);
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
  }
  __m256 s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, acc[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

}  // namespace latentkv::kernels::internal
