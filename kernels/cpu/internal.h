// Internal helpers shared by the CPU kernel sources (not part of the public
// kernels API; tests and benchmarks may use them to reach a specific path).
#ifndef LATENTKV_KERNELS_CPU_INTERNAL_H_
#define LATENTKV_KERNELS_CPU_INTERNAL_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels::internal {

// True when the CPU (and OS) supports AVX-512 F/BW/VL + BF16; decides whether
// the bf16 MatMul uses the AVX-512 kernels. Cached after the first call.
bool CpuHasAvx512Bf16();
// True when the CPU supports AVX2 and FMA: the bf16 MatMul's path on CPUs
// without AVX-512 (MatMulBf16Avx2).
bool CpuHasAvx2Fma();
// True when the CPU supports AVX and F16C (cpu/kv_avx2.cc).
bool CpuHasF16c();

// `iterations` rounds of 12 independent 8-lane FMAs (96 FMAs, 192 flops per
// round) on this thread; returns a value derived from them so the loop is
// kept. peak_avx2.cc; only when CpuHasAvx2Fma().
double F32FmaLoopAvx2(int64_t iterations);
// dst[i] = f16 src[i] as f32 for i < n, 8 at a time (needs CpuHasF16c()).
void F16ToF32F16c(const uint16_t* src, int64_t n, float* dst);
// dst[i] = fp8 e4m3 src[i] * scale for i < n, 8 at a time (needs
// CpuHasAvx2Fma()); the same values as the table path, NaN included.
void F8E4M3ToF32Avx2(const uint8_t* src, int64_t n, float scale, float* dst);
// Sets OpenBLAS to one thread, once per process (see matmul.cc): call before
// OpenBLAS runs inside OpenMP threads.
void EnsureBlasSingleThreaded();

// bf16 MatMul paths (y[n, rows] = x[n, cols] * W^T, W bf16 row-major). All
// of them keep x in f32 except MatMulBf16Avx512Dp, which rounds x to bf16 and
// uses _mm512_dpbf16_ps (faster when compute-bound, less accurate).
void MatMulBf16Portable(const float* x, int64_t n, const uint16_t* w,
                        int64_t rows, int64_t cols, float* y);
void MatMulBf16Avx512(const float* x, int64_t n, const uint16_t* w,
                      int64_t rows, int64_t cols, float* y);
void MatMulBf16Avx512Dp(const float* x, int64_t n, const uint16_t* w,
                        int64_t rows, int64_t cols, float* y);
// AVX2 + FMA: decode-sized n (<= kBf16Avx2MaxRows) on the rows kernel of
// gemv_avx2.h, larger n through MatMulConvertBlas. 64: at 64 decode streams
// the rows kernel gave 305 tok/s against 201-215 through conversion
// (bench/RESULTS.md).
inline constexpr int64_t kBf16Avx2MaxRows = 64;
// AVX2 + FMA without AVX-512: f32 products with up to this many inputs run
// on gemv_avx2.h's kernels (F32RowsAvx2), larger n on OpenBLAS sgemm.
// Weights streamed from DRAM (kernels_bench BM_MatMulStreamed): at n = 4 the
// rows kernel gave 40-49 GFLOP/s against sgemm's 21-29, at 16 about the
// same, at 64 sgemm wins (112-137 against 104-116).
inline constexpr int64_t kF32Avx2MaxRows = 16;
void MatMulBf16Avx2(const float* x, int64_t n, const uint16_t* w, int64_t rows,
                    int64_t cols, float* y);
// 16-bit weights (f16 or bf16): converts tiles of rows to f32 and multiplies
// with OpenBLAS. Portable.
void MatMulConvertBlas(const float* x, int64_t n, const uint16_t* w,
                       DType dtype, int64_t rows, int64_t cols, float* y);
// f32 weights: the n = 1 streaming kernel (AVX-512), the AVX2 kernels up to
// kF32Avx2MaxRows inputs, otherwise MatMulF32Blas; MatMulF32Small for small
// products.
void MatMulF32(const float* x, int64_t n, const float* w, int64_t rows,
               int64_t cols, float* y);
// f32 weights through OpenBLAS on every shape (sgemv for n = 1): MatMulF32's
// path past the streaming kernels, and the benchmarks' baseline.
void MatMulF32Blas(const float* x, int64_t n, const float* w, int64_t rows,
                   int64_t cols, float* y);
// f32 weights, single-threaded (AVX-512 when available); MatMul uses it
// below kParallelMinWork multiply-adds instead of OpenBLAS.
void MatMulF32Small(const float* x, int64_t n, const float* w, int64_t rows,
                    int64_t cols, float* y);
// f32 weights, one thread, plain loops (the fallback of MatMulF32Small).
void MatMulF32Portable(const float* x, int64_t n, const float* w, int64_t rows,
                       int64_t cols, float* y);
// Block-quantized weights (q8_0, q4_0, q4_1, q5_0, q5_1, q2_K .. q6_K):
// kernels/cpu/quant.h (MatMulQuant, MatMulQuantPortable, MatMulQuantGroup).
// f16 weights: converts tiles of rows to f32 and multiplies with OpenBLAS.
// Portable; accuracy first.
void MatMulF16(const float* x, int64_t n, const uint16_t* w, int64_t rows,
               int64_t cols, float* y);

// Panel layout (ops.h, WeightLayout::kPanels16): the position within a
// column's 16 values of row i (< 16) of the panel.
inline int64_t PanelSlot(DType dtype, int64_t i) {
  if (dtype != DType::kBF16) return i;
  // bf16: rows 0-3, 8-11, 4-7, 12-15.
  return (i & 3) | ((i & 4) << 1) | ((i & 8) >> 1);
}

// ps[i].y [n, ps[i].rows] = x[n, cols] * W_i^T for i < count, each W_i in
// panels of `dtype` (f32 or bf16) with `cols` columns, in one parallel
// region: the AVX2 panel kernels when the CPU has them, else a portable loop.
struct PanelProduct {
  const void* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
};
void MatMulPanels(const float* x, int64_t n, DType dtype, int64_t cols,
                  const PanelProduct* ps, int count);
// One product over panels with the portable loop (any CPU), one thread.
void MatMulPanelsPortable(const float* x, int64_t n, const void* w, DType dtype,
                          int64_t rows, int64_t cols, float* y);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_INTERNAL_H_
