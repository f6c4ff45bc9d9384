// AVX-512 BF16 matrix-vector kernels, compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512bf16 -mfma (kernels/cpu/bf16_gemv_avx512.cc). Call only
// when internal::CpuHasAvx512Bf16() is true. This header must stay free of
// inline code: anything inline compiled in that translation unit could carry
// AVX-512 instructions into the rest of the binary.
#ifndef LATENTKV_KERNELS_CPU_BF16_AVX512_H_
#define LATENTKV_KERNELS_CPU_BF16_AVX512_H_

#include <cstdint>

namespace latentkv::kernels::internal {

// Columns are processed in blocks of 32 (one 64-byte load of bf16 weights).
inline constexpr int64_t kBf16Block = 32;

// Packs x [n, cols] f32 into xp [n, ldx] (ldx = cols rounded up to 32), the
// layout Bf16RowsAvx512 reads: within each block of 32 columns the 16 even
// columns come first, then the 16 odd ones; padding is zero.
void PackXDeinterleaved(const float* x, int64_t n, int64_t cols, int64_t ldx,
                        float* xp);

// y[j, r] = sum_c W[r, c] * x[j, c] for r in [r0, r1), j < n, where W is
// bf16 [*, cols] (row stride cols) and xp comes from PackXDeinterleaved.
// y has row stride ldy. Weights are widened to f32 (exact) and multiplied in
// f32 FMA, so the result matches an f32 product of the rounded weights.
void Bf16RowsAvx512(const float* xp, int64_t n, int64_t ldx, const uint16_t* w,
                    int64_t cols, int64_t r0, int64_t r1, float* y,
                    int64_t ldy);

// Same with xb [n, ldx] = x rounded to bf16 (natural column order, zero
// padded) and _mm512_dpbf16_ps products.
void Bf16RowsAvx512Dp(const uint16_t* xb, int64_t n, int64_t ldx,
                      const uint16_t* w, int64_t cols, int64_t r0, int64_t r1,
                      float* y, int64_t ldy);

// f32 weights: y[j, r] = sum_c W[r, c] * x[j, c] for r in [r0, r1), j < n;
// x [n, cols] and W [*, cols] row-major. Used for small matrices, where
// OpenBLAS's threading costs more than the product.
void F32RowsAvx512(const float* x, int64_t n, const float* w, int64_t cols,
                   int64_t r0, int64_t r1, float* y, int64_t ldy);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_BF16_AVX512_H_
