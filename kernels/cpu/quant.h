// Kernels for block-quantized row-major weights (every block format of
// common/dtype.h: q8_0, q4_0, q4_1 here, q5_0, q5_1 and the k-quants in
// quant_k.h, which the *Avx2 functions below forward to) with f32
// activations. Internal to the CPU kernels; MatMul / MatMulGroup
// (kernels/ops.h) dispatch here.
//
// A weight matrix W [rows, cols] has cols % DTypeBlockElems(dtype) == 0 and
// row r at byte r * DTypeRowBytes(dtype, cols). Activations are never
// quantized: every path computes sum_c x[c] * W[r, c] in f32 over the exact
// dequantized weights (common/dtype.h), so results match a float64 reference
// over ConvertToF32(W) to f32 rounding.
//
// The *Avx2 functions are defined in quant_avx2.cc, the only file of these
// built with -mavx2 -mfma -mf16c; call them only when CpuHasAvx2FmaF16c().
// This header must stay free of intrinsics and inline library code.
#ifndef LATENTKV_KERNELS_CPU_QUANT_H_
#define LATENTKV_KERNELS_CPU_QUANT_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels::internal {

// True when the CPU supports AVX2, FMA and F16C (the f16 block scales are
// converted with vcvtph2ps).
bool CpuHasAvx2FmaF16c();

// n = 1: y[r] = sum_c x[c] * W[r, c] for r0 <= r < r1. prep: the
// QuantGemvPrepFloats(dtype, cols) floats QuantGemvPrepareAvx2 wrote for
// this x (q4_0: x reordered and scaled to match its conversion-free nibble
// decoding, with per-block lane sums; q4_1: sum(x) per block, which its m
// multiplies; q8_0: none). Reads kGemvStreams (gemv_avx2.h) far-apart
// sequential streams of rows at once, as the f32 n = 1 kernel does,
// dequantizing in registers: each weight byte is read once.
int64_t QuantGemvPrepFloats(DType dtype, int64_t cols);
void QuantGemvPrepareAvx2(const float* x, DType dtype, int64_t cols,
                          float* prep);
void QuantGemvAvx2(const float* x, const float* prep, const uint8_t* w,
                   DType dtype, int64_t cols, int64_t r0, int64_t r1, float* y);

// dst[(r - r0) * cols + c] = W[r, c] (f32) for r0 <= r < r1: bit-identical
// to ConvertToF32 of the rows.
void DequantRowsAvx2(const uint8_t* w, DType dtype, int64_t cols, int64_t r0,
                     int64_t r1, float* dst);

// The same rows as f32 16-row panels (WeightLayout::kPanels16 of f32, rows
// past r1 zero) in ceil((r1 - r0) / 16) * 16 * cols floats at dst (32-byte
// aligned); values bit-identical to DequantRowsAvx2.
void DequantPanelsAvx2(const uint8_t* w, DType dtype, int64_t cols, int64_t r0,
                       int64_t r1, float* dst);

// From this many inputs on, the AVX2 path dequantizes tiles of rows into
// panels (L2-resident) and multiplies them with the panel kernels
// (PanelsAvx2, gemm_avx2.h: the 6 x 16 micro-kernel); with 2 to this - 1
// inputs it dequantizes row-major tiles for the f32 rows kernel
// (F32RowsAvx2, gemv_avx2.h). Streamed from DRAM, one thread
// (kernels_bench BM_MatMulStreamedQuant, q8_0 / q4_1, 1536 x 576 and
// 2048 x 768): rows kernel 56-70 GFLOP/s at n = 16, 64-75 at 32, 63-79 at
// 64; panels 39-49 at 16 (dequantizing and transposing a tile costs more
// than 16 inputs win) and 72-80 at 64 (bench/RESULTS.md, "Quantized
// weights").
inline constexpr int64_t kQuantPanelsMinN = 48;

// y[n, rows] = x[n, cols] * W^T for a quantized `dtype`: the AVX2 kernels
// when the CPU has them (n = 1 fused, otherwise dequantized tiles), else
// MatMulQuantPortable's loop; OpenMP over rows as the other MatMuls.
// q8_min_inputs > 0: int8 activations (quant_q8.h) for products of at
// least that many inputs on AVX2 CPUs (ops.h MatMulOptions); 0: exact.
void MatMulQuant(const float* x, int64_t n, const uint8_t* w, DType dtype,
                 int64_t rows, int64_t cols, float* y,
                 int64_t q8_min_inputs = 0);

// The portable path (any CPU): rows dequantized with ConvertToF32 into a
// tile, then plain dot-product loops. Threads as MatMulQuant.
void MatMulQuantPortable(const float* x, int64_t n, const uint8_t* w,
                         DType dtype, int64_t rows, int64_t cols, float* y);

// ys[i] = x * ws[i]^T for `count` quantized row-major matrices of the same
// dtype and cols, in one parallel region (each thread takes the same share
// of every matrix's rows). Same results as MatMulQuant.
struct QuantProduct {
  const uint8_t* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
};
void MatMulQuantGroup(const float* x, int64_t n, DType dtype, int64_t cols,
                      const QuantProduct* ps, int count,
                      int64_t q8_min_inputs = 0);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_QUANT_H_
