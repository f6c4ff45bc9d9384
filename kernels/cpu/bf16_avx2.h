// AVX2 + FMA kernel for bf16 weights, for CPUs without AVX-512 (e.g. AMD Zen
// 2/3): kernels/cpu/bf16_gemv_avx2.cc is the only file built with -mavx2
// -mfma. Call only when internal::CpuHasAvx2Fma() is true. This header must
// stay free of intrinsics and inline library code.
#ifndef LATENTKV_KERNELS_CPU_BF16_AVX2_H_
#define LATENTKV_KERNELS_CPU_BF16_AVX2_H_

#include <cstdint>

namespace latentkv::kernels::internal {

// y[j * ldy + r] = sum_c x[j * ldx + c] * W[r, c] for j < n and rows
// r0 <= r < r1; W bf16 [*, cols] row-major, x f32 (natural column order).
// Decode-sized n: each weight row is read once for all n inputs.
void Bf16RowsAvx2(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_BF16_AVX2_H_
