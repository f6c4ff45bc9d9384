// MatMul over block-quantized weights (see quant.h): dispatch, threading,
// tiles and the portable path.
#include "kernels/cpu/quant.h"

#include <cpuid.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/gemm_avx2.h"
#include "kernels/cpu/gemv_avx2.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quant_k.h"
#include "kernels/cpu/quant_q8.h"

namespace latentkv::kernels::internal {
namespace {

// Weight rows per parallel work unit of MatMulQuant.
constexpr int64_t kRowsPerBlock = 16;

template <typename T>
T* Scratch(int64_t count) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < count) buf.resize(count);
  return buf.data();
}

// Rows of the dequantized tile multiplied with the f32 rows kernel: about
// 96 KiB of f32 (L2-resident while every input passes over it), a multiple
// of 12 so the kernel's 3- and 4-row tiles divide it.
int64_t RowsKernelTile(int64_t cols) {
  const int64_t t = (96 << 10) / 4 / cols / 12 * 12;
  return std::clamp<int64_t>(t, 12, 48);
}

// Rows of the panel tile: about 256 KiB of f32 (L2-resident while the
// micro-kernel's groups of 6 inputs pass over it), whole panels.
int64_t PanelTile(int64_t cols) {
  const int64_t t = (256 << 10) / 4 / cols / kPanelRows * kPanelRows;
  return std::clamp<int64_t>(t, kPanelRows, 8 * kPanelRows);
}

// Per-thread scratch 32-byte aligned (the panel kernels' layout).
float* AlignedScratch(int64_t count) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < count + 8) buf.resize(count + 8);
  const auto a = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((a + 31) / 32 * 32);
}

// x packed for the panel kernels when n >= kQuantPanelsMinN (PackInputs).
const float* PackedInputs(const float* x, int64_t n, int64_t cols) {
  if (n < kQuantPanelsMinN) return nullptr;
  thread_local std::vector<float> xp;
  xp.resize(PackedInputFloats(n, cols));
  PackInputs(x, n, cols, cols, xp.data());
  return xp.data();
}

void CheckShape(DType dtype, int64_t cols) {
  LATENTKV_CHECK(IsBlockQuantized(dtype),
                 "not a quantized dtype: ", std::string(DTypeName(dtype)));
  LATENTKV_CHECK(cols % DTypeBlockElems(dtype) == 0,
                 std::string(DTypeName(dtype)), " matrix of ", cols,
                 " columns: not whole blocks of ", DTypeBlockElems(dtype));
}

// The n = 1 kernel's prepared input (QuantGemvPrepareAvx2).
const float* GemvPrep(const float* x, DType dtype, int64_t cols) {
  thread_local std::vector<float> prep;  // not Scratch's: both live at once
  const int64_t count = QuantGemvPrepFloats(dtype, cols);
  if (static_cast<int64_t>(prep.size()) < count) prep.resize(count);
  QuantGemvPrepareAvx2(x, dtype, cols, prep.data());
  return prep.data();
}

// Rows [r0, r1) of y[n, ldy] = x * W^T on this thread, AVX2 path. prep:
// GemvPrep(x) when n == 1; xp: PackedInputs(x) when n >= kQuantPanelsMinN.
void RowsAvx2(const float* x, int64_t n, const float* prep, const float* xp,
              const uint8_t* w, DType dtype, int64_t cols, int64_t r0,
              int64_t r1, float* y, int64_t ldy) {
  if (r0 >= r1) return;
  if (n == 1) {
    QuantGemvAvx2(x, prep, w, dtype, cols, r0, r1, y);
    return;
  }
  if (n < kQuantPanelsMinN) {
    const int64_t tile = RowsKernelTile(cols);
    float* buf = Scratch<float>(tile * cols);
    for (int64_t r = r0; r < r1; r += tile) {
      const int64_t t = std::min(tile, r1 - r);
      DequantRowsAvx2(w, dtype, cols, r, r + t, buf);
      F32RowsAvx2(x, n, cols, buf, cols, 0, t, y + r, ldy);
    }
    return;
  }
  const int64_t tile = PanelTile(cols);
  float* buf = AlignedScratch(tile * cols);
  for (int64_t r = r0; r < r1; r += tile) {
    const int64_t t = std::min(tile, r1 - r);
    DequantPanelsAvx2(w, dtype, cols, r, r + t, buf);
    PanelsAvx2(x, xp, n, buf, t, cols, 0, (t + kPanelRows - 1) / kPanelRows,
               y + r, ldy);
  }
}

// The same on any CPU: ConvertToF32 tiles, plain loops.
void RowsPortable(const float* x, int64_t n, const uint8_t* w, DType dtype,
                  int64_t cols, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  constexpr int64_t kTile = 8;
  const int64_t row_bytes = DTypeRowBytes(dtype, cols);
  float* buf = Scratch<float>(kTile * cols);
  for (int64_t r = r0; r < r1; r += kTile) {
    const int64_t t = std::min(kTile, r1 - r);
    ConvertToF32(w + r * row_bytes, dtype, t * cols, buf);
    for (int64_t j = 0; j < n; ++j) {
      const float* xj = x + j * cols;
      for (int64_t i = 0; i < t; ++i) {
        const float* wr = buf + i * cols;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < cols; ++c) s += wr[c] * xj[c];
        y[j * ldy + r + i] = s;
      }
    }
  }
}

// x quantized for the int8 path (quant_q8.h) when it is on (q8_min_inputs
// > 0) and n >= q8_min_inputs (AVX2 CPU checked by the caller); else
// nullopt. The arrays are this thread's.
std::optional<Q8Activations> Q8Inputs(int64_t q8_min_inputs, const float* x,
                                      int64_t n, int64_t cols) {
  if (q8_min_inputs <= 0 || n < q8_min_inputs) return std::nullopt;
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> d, qsum;
  q.resize(n * cols);
  d.resize(n * cols / 32);
  qsum.resize(n * cols / 16);
  QuantizeQ8Avx2(x, cols, 0, n, q.data(), d.data(), qsum.data());
  return Q8Activations{q.data(), d.data(), qsum.data(), n, cols};
}

}  // namespace

bool IsQuantK(DType dtype) {
  return dtype == DType::kQ5_0 || dtype == DType::kQ5_1 || IsKQuant(dtype);
}

bool CpuHasAvx2FmaF16c() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
    return f16c && CpuHasAvx2Fma();
  }();
  return has;
}

void MatMulQuant(const float* x, int64_t n, const uint8_t* w, DType dtype,
                 int64_t rows, int64_t cols, float* y, int64_t q8_min_inputs) {
  CheckShape(dtype, cols);
  if (!CpuHasAvx2FmaF16c()) {
    MatMulQuantPortable(x, n, w, dtype, rows, cols, y);
    return;
  }
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (const auto a = Q8Inputs(q8_min_inputs, x, n, cols)) {
    ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
      Q8RowsAvx2(*a, w, dtype, b0 * kRowsPerBlock,
                 std::min(rows, b1 * kRowsPerBlock), y, rows);
    });
    return;
  }
  const float* prep = n == 1 ? GemvPrep(x, dtype, cols) : nullptr;
  const float* xp = PackedInputs(x, n, cols);
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    RowsAvx2(x, n, prep, xp, w, dtype, cols, b0 * kRowsPerBlock,
             std::min(rows, b1 * kRowsPerBlock), y, rows);
  });
}

void MatMulQuantPortable(const float* x, int64_t n, const uint8_t* w,
                         DType dtype, int64_t rows, int64_t cols, float* y) {
  CheckShape(dtype, cols);
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    RowsPortable(x, n, w, dtype, cols, b0 * kRowsPerBlock,
                 std::min(rows, b1 * kRowsPerBlock), y, rows);
  });
}

void MatMulQuantGroup(const float* x, int64_t n, DType dtype, int64_t cols,
                      const QuantProduct* ps, int count,
                      int64_t q8_min_inputs) {
  CheckShape(dtype, cols);
  const bool avx2 = CpuHasAvx2FmaF16c();
  const auto a = avx2 ? Q8Inputs(q8_min_inputs, x, n, cols) : std::nullopt;
  const float* prep = avx2 && !a && n == 1 ? GemvPrep(x, dtype, cols) : nullptr;
  const float* xp = avx2 && !a ? PackedInputs(x, n, cols) : nullptr;
  constexpr int64_t kShares = 64;
  int64_t work = 0;
  for (int i = 0; i < count; ++i) work += n * ps[i].rows * cols;
  // Share boundaries on 16-row multiples, the last share taking the rest.
  auto bound = [](int64_t rows, int64_t s) {
    return s >= kShares ? rows : rows * s / kShares / 16 * 16;
  };
  ParallelForBlocks(kShares, work, [&](int64_t s0, int64_t s1) {
    for (int i = 0; i < count; ++i) {
      const int64_t r0 = bound(ps[i].rows, s0);
      const int64_t r1 = bound(ps[i].rows, s1);
      if (r0 >= r1) continue;
      if (a) {
        Q8RowsAvx2(*a, ps[i].w, dtype, r0, r1, ps[i].y, ps[i].rows);
      } else if (avx2) {
        RowsAvx2(x, n, prep, xp, ps[i].w, dtype, cols, r0, r1, ps[i].y,
                 ps[i].rows);
      } else {
        RowsPortable(x, n, ps[i].w, dtype, cols, r0, r1, ps[i].y, ps[i].rows);
      }
    }
  });
}

}  // namespace latentkv::kernels::internal
