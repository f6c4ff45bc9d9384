// AVX2 kernels for the q5_0 / q5_1 and k-quant weights (q2_K .. q6_K;
// layouts in common/dtype.h) with f32 activations. Internal to the CPU
// kernels: quant_avx2.cc's QuantGemv* / DequantRowsAvx2 / DequantPanelsAvx2
// (quant.h) forward these dtypes here, so MatMul, MatMulGroup and their
// tile and panel paths (quant.cc) serve them like q8_0 / q4_0 / q4_1.
//
// Decoding (all formats alike): a chunk of 32 consecutive elements becomes
// 32 byte levels q >= 0 in one 256-bit register (the bit fields of the
// format shifted, masked and or-ed 32 at a time), then four vectors of 8 f32
// (vpshufb into dword lanes, vcvtdq2ps). Every element is w = S * q - M with
// S, M its sub-block's (16 or 32 elements) scale and offset: q5_0 M = 16d,
// q3_K M = 4S and q6_K M = 32S fold the formats' signed levels into the
// offset. S * q is exact in f32 (few significant bits), so
// fmsub(q, S, M) rounds once, like the scalar dequantization: the
// dequantizing functions give ConvertToF32's values (a zero's sign may
// differ: S * q - M is +0 where the scalar S * (q - 32) is -0).
//
// The n = 1 product never materializes weights: per sub-block it adds
// S * (q . x) and subtracts M * sum(x) (the sums prepared once per x), with
// x permuted per 32-element chunk to the lane order the decoding produces
// (v[k] lanes 0-3: elements 4k..4k+3, lanes 4-7: 16 + 4k..16 + 4k + 3).
// It walks kGemvStreams rows at once (gemv_avx2.h), each a sequential
// stream with software prefetch of its next row.
//
// Defined in quant_k_avx2.cc (n = 1) and quant_k_dequant_avx2.cc (tiles and
// panels) over the decoding in quant_k_formats.h, all built with -mavx2
// -mfma -mf16c: call only when CpuHasAvx2FmaF16c() (IsQuantK is defined in
// quant.cc, for any CPU). This header must stay free of intrinsics and
// inline library code.
#ifndef LATENTKV_KERNELS_CPU_QUANT_K_H_
#define LATENTKV_KERNELS_CPU_QUANT_K_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels::internal {

// True for the dtypes these kernels serve (q5_0, q5_1, q2_K .. q6_K).
bool IsQuantK(DType dtype);

// The n = 1 product's prepared input: cols floats of permuted x, then one
// sum of x per sub-block (cols / 16 or cols / 32 floats; q5_0 / q5_1: the
// sum / 8, which their kernel adds in each of 8 lanes).
int64_t QuantKGemvPrepFloats(DType dtype, int64_t cols);
void QuantKGemvPrepare(const float* x, DType dtype, int64_t cols, float* prep);
// y[r] = sum_c x[c] * W[r, c] for r0 <= r < r1 (W row-major, cols a
// multiple of DTypeBlockElems(dtype)), from QuantKGemvPrepare's prep.
void QuantKGemvAvx2(const float* prep, const uint8_t* w, DType dtype,
                    int64_t cols, int64_t r0, int64_t r1, float* y);

// dst[(r - r0) * cols + c] = W[r, c] for r0 <= r < r1: ConvertToF32's
// values (up to the sign of zero, above).
void QuantKDequantRowsAvx2(const uint8_t* w, DType dtype, int64_t cols,
                           int64_t r0, int64_t r1, float* dst);
// The same rows as f32 16-row panels (quant.h, DequantPanelsAvx2).
void QuantKDequantPanelsAvx2(const uint8_t* w, DType dtype, int64_t cols,
                             int64_t r0, int64_t r1, float* dst);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_QUANT_K_H_
