// AVX2 + FMA kernels for CPUs without AVX-512 (e.g. AMD Zen 2/3/4 VMs):
// kernels/cpu/gemv_avx2.cc is the only file built with -mavx2 -mfma. Call
// only when internal::CpuHasAvx2Fma() is true. This header must stay free of
// intrinsics and inline library code.
#ifndef LATENTKV_KERNELS_CPU_GEMV_AVX2_H_
#define LATENTKV_KERNELS_CPU_GEMV_AVX2_H_

#include <cstdint>

namespace latentkv::kernels::internal {

// y[j * ldy + r] = sum_c x[j * ldx + c] * W[r, c] for j < n and rows
// r0 <= r < r1; W bf16 or f32 [*, cols] row-major, x f32 (natural column
// order).
//
// n = 1 (single-stream decode): the rows are read as kGemvStreams far-apart
// sequential streams (equal sub-ranges of [r0, r1) walked together): one
// sequential stream per core is latency-bound on the VMs this runs on, and
// the read-bandwidth probe (MeasureReadBandwidth) also keeps several streams
// per thread in flight. Measured by kernels_bench's BM_MatMulStreamed and
// BM_DecodeProducts110M (bench/RESULTS.md).
//
// n > 1 (decode batches): 3-row x 4-input dot-product tiles, each weight row
// read from memory once for all n inputs; the columns are split into chunks
// when n * cols floats of x would not stay in L2.
inline constexpr int kGemvStreams = 4;
void Bf16RowsAvx2(const float* x, int64_t n, int64_t ldx, const uint16_t* w,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy);
void F32RowsAvx2(const float* x, int64_t n, int64_t ldx, const float* w,
                 int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_GEMV_AVX2_H_
