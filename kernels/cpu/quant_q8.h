// Int8 activations for block-quantized weights (ops.h ActivationQuant::kQ8):
// the inputs quantized per block of 32 to int8, products with the weights'
// integer levels by AVX2 integer dot products (vpmaddubsw / vpmaddwd).
// Internal to the CPU kernels; MatMulQuant / MatMulQuantGroup (quant.h)
// call it when MatMulOptions asks for int8 activations.
//
// Activations: each input row x [cols] in blocks of 32 elements,
//   amax = max |x_c| over the block, d = amax / 127,
//   q_c = round-half-even(x_c * (127 / amax)) (0 when amax == 0),
// so |q_c| <= 127 and x^_c = d * q_c is within d / 2 of x_c.
//
// Weights: every format's element is w = S * l - M with l an integer level
// and S, M its sub-block's scale and offset (kernels/cpu/quant_k.h): q8_0
// l = the signed byte, M = 0; q4_0 l = the nibble, M = 8d; q4_1 M = -m;
// q5_0 / q5_1 and the k-quants as quant_k.h (levels 0..63). A tile of
// weight rows is decoded once into the levels and per-16-element S and M
// (L1-resident), then every input passes over it:
//   y = sum over 16-element groups g of
//       S_g * d_b * (l . q)_g - M_g * d_b * (sum q)_g,
// the integer dots exact in int32 (|l| <= 128, |q| <= 127: the pairwise
// int16 sums of vpmaddubsw cannot saturate), scales in f32. That is
// sum_c w_c * x^_c, so against the exact product with f32 x:
//   |y - sum_c w_c x_c| <= sum_b (d_b / 2) * sum_{c in b} |w_c|
//                          + f32 rounding (a few ulps of sum |w_c x^_c|).
// tests/ check this bound against a float64 reference and the integer
// scheme against a scalar implementation of it.
//
// Non-finite activations: the block's d is inf or NaN, so the outputs the
// block feeds are not finite either (as in the f32 path).
//
// quant_q8_avx2.cc, built with -mavx2 -mfma -mf16c: call only when
// CpuHasAvx2FmaF16c(). This header must stay free of intrinsics.
#ifndef LATENTKV_KERNELS_CPU_QUANT_Q8_H_
#define LATENTKV_KERNELS_CPU_QUANT_Q8_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels::internal {

// n input rows quantized (cols a multiple of 32): q [n, cols], d [n,
// cols / 32] (the blocks' scales), qsum [n, cols / 16] (d * sum of q over
// each 16 elements: the offsets' factor).
struct Q8Activations {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const float* qsum = nullptr;
  int64_t n = 0;
  int64_t cols = 0;
};

// Quantizes x [n, cols] into caller-provided arrays of the sizes above.
// Rows [j0, j1) only (callers may split the rows across threads).
void QuantizeQ8Avx2(const float* x, int64_t cols, int64_t j0, int64_t j1,
                    int8_t* q, float* d, float* qsum);

// y[j * ldy + r] = sum_c w[r, c] x^[j, c] for every input j < a.n and rows
// r0 <= r < r1 (row-major quantized W of `dtype`, any block format of
// common/dtype.h). One thread; callers split the rows.
void Q8RowsAvx2(const Q8Activations& a, const uint8_t* w, DType dtype,
                int64_t r0, int64_t r1, float* y, int64_t ldy);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_QUANT_Q8_H_
