// AVX2 + FMA products over weights packed into 16-row panels
// (WeightLayout::kPanels16, kernels/ops.h). kernels/cpu/gemm_avx2.cc is
// built with -mavx2 -mfma; call only when internal::CpuHasAvx2Fma() is true.
// This header must stay free of intrinsics and inline library code.
//
// Why a packed layout: at decode batches of 16-64 inputs and in prefill the
// products are arithmetic-bound, and the fastest AVX2 form (BLIS's Haswell
// kernel) broadcasts one input value against 16 consecutive output rows of
// one weight column. Row-major weights must be transposed for that on every
// use (OpenBLAS's `incopy`, ~15% of a 64-stream decode step; ~35% in our own
// packed-per-use attempt, bench/RESULTS.md); panels packed once at load
// make that free. One input (decode of one stream) reads the same panels as
// a sequential stream, so one layout serves every batch size.
#ifndef LATENTKV_KERNELS_CPU_GEMM_AVX2_H_
#define LATENTKV_KERNELS_CPU_GEMM_AVX2_H_

#include <cstdint>

namespace latentkv::kernels::internal {

// Output rows per panel.
inline constexpr int64_t kPanelRows = 16;
// Inputs per packed group of x (the micro-kernel's 6 x 16 tile: 12
// accumulators, 2 weight vectors and one broadcast in the 16 ymm registers).
inline constexpr int64_t kPanelGroup = 6;

// Packs x [n, cols] (row stride ldx) for the panel kernels: ceil(n / 6)
// groups, group g at xp + g * cols * 6 holding, for each column c, the 6
// values x[6g + i, c] (zero past n). xp: PackedInputFloats(n, cols) floats.
int64_t PackedInputFloats(int64_t n, int64_t cols);
void PackInputs(const float* x, int64_t n, int64_t ldx, int64_t cols,
                float* xp);

// y[j * ldy + r] = sum_c x[j, c] * W[r, c] for j < n and the rows of panels
// [p0, p1) (rows < `rows`). W: panels of f32 or bf16 (ops.h, kPanels16).
// n == 1: x is the plain input row ([cols]), xp unused (may be null);
// n > 1: xp from PackInputs. One thread; callers split the panels.
void PanelsAvx2(const float* x, const float* xp, int64_t n, const float* w,
                int64_t rows, int64_t cols, int64_t p0, int64_t p1, float* y,
                int64_t ldy);
void PanelsAvx2(const float* x, const float* xp, int64_t n, const uint16_t* w,
                int64_t rows, int64_t cols, int64_t p0, int64_t p1, float* y,
                int64_t ldy);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_GEMM_AVX2_H_
