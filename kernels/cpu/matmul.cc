// MatMul for f32 (OpenBLAS), bf16 (AVX-512 or portable) and f16 weights.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/bf16_avx512.h"
#include "kernels/cpu/gemv_avx2.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/quant.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace internal {
namespace {

// Weight rows per parallel work unit (a multiple of the kernels' 8-row tile).
constexpr int64_t kRowsPerBlock = 16;
// Up to this many x rows, f32 MatMul streams weights with our AVX-512 kernel.
constexpr int64_t kF32StreamMaxRows = 1;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Per-thread scratch for packed inputs, grown on demand and kept.
template <typename T>
T* Scratch(int64_t count) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < count) buf.resize(count);
  return buf.data();
}

// y[n, rows] (row stride ldy) = x[n, cols] * W[rows, cols]^T on this thread:
// sgemv for n == 1 (sgemm with M = 1 is ~3x slower), sgemm otherwise.
void F32Blas(const float* x, int64_t n, const float* w, int64_t rows,
             int64_t cols, float* y, int64_t ldy) {
  if (rows <= 0) return;
  if (n == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w, cols, x, 1,
                0.0f, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x,
                cols, w, cols, 0.0f, y, ldy);
  }
}

}  // namespace

// OpenBLAS runs single-threaded inside our OpenMP threads: its own pthread
// pool, spinning after each call, would fight the OpenMP team for the cores
// (measured: an f32 then a bf16 matvec took 3 ms instead of 0.17 ms). This
// is process-wide: any other OpenBLAS caller in the process becomes
// single-threaded too.
void EnsureBlasSingleThreaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

bool CpuHasAvx512Bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

bool CpuHasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

void PackXDeinterleaved(const float* x, int64_t n, int64_t cols, int64_t ldx,
                        float* xp) {
  constexpr int64_t kHalf = kBf16Block / 2;
  for (int64_t j = 0; j < n; ++j) {
    const float* xr = x + j * cols;
    float* out = xp + j * ldx;
    std::memset(out, 0, ldx * sizeof(float));
    const int64_t full = cols / kBf16Block * kBf16Block;
    for (int64_t c = 0; c < full; c += kBf16Block) {
      for (int64_t i = 0; i < kHalf; ++i) {
        out[c + i] = xr[c + 2 * i];
        out[c + kHalf + i] = xr[c + 2 * i + 1];
      }
    }
    for (int64_t c = full; c < cols; ++c) {
      const int64_t in_block = c - full;
      out[full + (in_block & 1) * kHalf + in_block / 2] = xr[c];
    }
  }
}

void MatMulBf16Avx512(const float* x, int64_t n, const uint16_t* w,
                      int64_t rows, int64_t cols, float* y) {
  const int64_t ldx = RoundUp(cols, kBf16Block);
  float* xp = Scratch<float>(n * ldx);
  PackXDeinterleaved(x, n, cols, ldx, xp);
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    Bf16RowsAvx512(xp, n, ldx, w, cols, b0 * kRowsPerBlock,
                   std::min(rows, b1 * kRowsPerBlock), y, rows);
  });
}

void MatMulBf16Avx512Dp(const float* x, int64_t n, const uint16_t* w,
                        int64_t rows, int64_t cols, float* y) {
  const int64_t ldx = RoundUp(cols, kBf16Block);
  uint16_t* xb = Scratch<uint16_t>(n * ldx);
  for (int64_t j = 0; j < n; ++j) {
    ConvertFromF32(x + j * cols, cols, DType::kBF16, xb + j * ldx);
    std::fill(xb + j * ldx + cols, xb + (j + 1) * ldx, uint16_t{0});
  }
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    Bf16RowsAvx512Dp(xb, n, ldx, w, cols, b0 * kRowsPerBlock,
                     std::min(rows, b1 * kRowsPerBlock), y, rows);
  });
}

void MatMulBf16Portable(const float* x, int64_t n, const uint16_t* w,
                        int64_t rows, int64_t cols, float* y) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    std::vector<float> wf(cols);
    const int64_t r1 = std::min(rows, b1 * kRowsPerBlock);
    for (int64_t r = b0 * kRowsPerBlock; r < r1; ++r) {
      const uint16_t* wr = w + r * cols;
      for (int64_t c = 0; c < cols; ++c) wf[c] = Bf16ToF32(wr[c]);
      for (int64_t j = 0; j < n; ++j) {
        const float* xj = x + j * cols;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < cols; ++c) s += wf[c] * xj[c];
        y[j * rows + r] = s;
      }
    }
  });
}

void MatMulF32Portable(const float* x, int64_t n, const float* w, int64_t rows,
                       int64_t cols, float* y) {
  for (int64_t j = 0; j < n; ++j) {
    const float* xj = x + j * cols;
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = w + r * cols;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < cols; ++c) s += wr[c] * xj[c];
      y[j * rows + r] = s;
    }
  }
}

void MatMulF32Small(const float* x, int64_t n, const float* w, int64_t rows,
                    int64_t cols, float* y) {
  if (CpuHasAvx512Bf16()) {
    F32RowsAvx512(x, n, w, cols, 0, rows, y, rows);
  } else if (n <= kF32Avx2MaxRows && CpuHasAvx2Fma()) {
    F32RowsAvx2(x, n, cols, w, cols, 0, rows, y, rows);
  } else {
    MatMulF32Portable(x, n, w, rows, cols, y);
  }
}

void MatMulF16(const float* x, int64_t n, const uint16_t* w, int64_t rows,
               int64_t cols, float* y) {
  MatMulConvertBlas(x, n, w, DType::kF16, rows, cols, y);
}

void MatMulBf16Avx2(const float* x, int64_t n, const uint16_t* w, int64_t rows,
                    int64_t cols, float* y) {
  if (n > kBf16Avx2MaxRows) {
    // Prefill-sized: compute-bound, so convert tiles and let BLAS multiply.
    MatMulConvertBlas(x, n, w, DType::kBF16, rows, cols, y);
    return;
  }
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    Bf16RowsAvx2(x, n, cols, w, cols, b0 * kRowsPerBlock,
                 std::min(rows, b1 * kRowsPerBlock), y, rows);
  });
}

void MatMulConvertBlas(const float* x, int64_t n, const uint16_t* w,
                       DType dtype, int64_t rows, int64_t cols, float* y) {
  EnsureBlasSingleThreaded();
  // Tiles of about 1 MiB of f32 weights: converted, then one BLAS call each.
  const int64_t tile = std::max<int64_t>(1, (int64_t{1} << 18) / cols);
  const int64_t tiles = (rows + tile - 1) / tile;
  ParallelForBlocks(tiles, n * rows * cols, [&](int64_t t0, int64_t t1) {
    std::vector<float> wf(std::min(rows, tile) * cols);
    for (int64_t r0 = t0 * tile; r0 < std::min(rows, t1 * tile); r0 += tile) {
      const int64_t t = std::min(tile, rows - r0);
      ConvertToF32(w + r0 * cols, dtype, t * cols, wf.data());
      F32Blas(x, n, wf.data(), t, cols, y + r0, rows);
    }
  });
}

void MatMulF32(const float* x, int64_t n, const float* w, int64_t rows,
               int64_t cols, float* y) {
  if (n * rows * cols < kParallelMinWork) {
    // Small: stays on this thread, without BLAS call overhead.
    MatMulF32Small(x, n, w, rows, cols, y);
    return;
  }
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (n <= kF32StreamMaxRows && CpuHasAvx512Bf16()) {
    // Decode-sized batches are bound by streaming the weights: our AVX-512
    // rows kernel reads them once for all n rows and beats OpenBLAS's sgemv
    // (Haswell kernels in Debian's 0.3.21), measured in bench/RESULTS.md.
    ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
      F32RowsAvx512(x, n, w, cols, b0 * kRowsPerBlock,
                    std::min(rows, b1 * kRowsPerBlock), y, rows);
    });
    return;
  }
  if (n <= kF32Avx2MaxRows && CpuHasAvx2Fma() && !CpuHasAvx512Bf16()) {
    // The same without AVX-512: several streams per thread for n = 1, the
    // rows kernel's tiles for small batches (gemv_avx2.h); both beat
    // OpenBLAS there, measured in bench/RESULTS.md.
    ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
      F32RowsAvx2(x, n, cols, w, cols, b0 * kRowsPerBlock,
                  std::min(rows, b1 * kRowsPerBlock), y, rows);
    });
    return;
  }
  MatMulF32Blas(x, n, w, rows, cols, y);
}

void MatMulF32Blas(const float* x, int64_t n, const float* w, int64_t rows,
                   int64_t cols, float* y) {
  EnsureBlasSingleThreaded();
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  ParallelForBlocks(blocks, n * rows * cols, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * kRowsPerBlock;
    const int64_t r1 = std::min(rows, b1 * kRowsPerBlock);
    F32Blas(x, n, w + r0 * cols, r1 - r0, cols, y + r0, rows);
  });
}

}  // namespace internal

// MatMulOptions as quant.h's q8_min_inputs (0: exact f32 activations).
static int64_t Q8MinInputs(const MatMulOptions& o) {
  return o.activations == ActivationQuant::kQ8
             ? std::max<int64_t>(o.q8_min_inputs, 1)
             : 0;
}

void MatMul(const float* x, int64_t n, const WeightView& w, float* y,
            const MatMulOptions& options) {
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  if (n <= 0 || rows <= 0) return;
  if (cols <= 0) {
    std::fill(y, y + n * rows, 0.0f);
    return;
  }
  if (w.layout == WeightLayout::kPanels16) {
    LATENTKV_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16,
                   "panels of ", std::string(DTypeName(w.dtype)));
    const internal::PanelProduct p{w.data, rows, y};
    internal::MatMulPanels(x, n, w.dtype, cols, &p, 1);
    return;
  }
  switch (w.dtype) {
    case DType::kF32:
      internal::MatMulF32(x, n, static_cast<const float*>(w.data), rows, cols,
                          y);
      return;
    case DType::kBF16: {
      const auto* wb = static_cast<const uint16_t*>(w.data);
      if (internal::CpuHasAvx512Bf16()) {
        internal::MatMulBf16Avx512(x, n, wb, rows, cols, y);
      } else if (internal::CpuHasAvx2Fma()) {
        internal::MatMulBf16Avx2(x, n, wb, rows, cols, y);
      } else {
        internal::MatMulBf16Portable(x, n, wb, rows, cols, y);
      }
      return;
    }
    case DType::kF16:
      internal::MatMulF16(x, n, static_cast<const uint16_t*>(w.data), rows,
                          cols, y);
      return;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      internal::MatMulQuant(x, n, static_cast<const uint8_t*>(w.data), w.dtype,
                            rows, cols, y, Q8MinInputs(options));
      return;
    case DType::kF8E4M3:  // a KV dtype only (ParseWeightsDType refuses it)
      break;
  }
  LATENTKV_CHECK(false, "MatMul: no kernel for ",
                 std::string(DTypeName(w.dtype)), " weights");
}

namespace {

// True when every product of the group can run in one parallel region:
// same dtype and cols, non-empty, and `ok` accepts the dtype.
template <typename Ok>
bool FusableGroup(const WeightView* ws, int count, Ok ok) {
  if (count < 2) return false;
  for (int i = 0; i < count; ++i) {
    if (ws[i].dtype != ws[0].dtype || ws[i].cols != ws[0].cols ||
        ws[i].layout != ws[0].layout || ws[i].rows <= 0 || !ok(ws[i].dtype)) {
      return false;
    }
  }
  return true;
}

void MatMulGroupAvx512(const float* x, int64_t n, const WeightView* ws,
                       float* const* ys, int count) {
  const int64_t cols = ws[0].cols;
  struct Block {
    int matrix;
    int64_t r0, r1;
  };
  std::vector<Block> blocks;
  int64_t work = 0;
  for (int i = 0; i < count; ++i) {
    for (int64_t r = 0; r < ws[i].rows; r += internal::kRowsPerBlock) {
      blocks.push_back(
          {i, r, std::min(ws[i].rows, r + internal::kRowsPerBlock)});
    }
    work += n * ws[i].rows * cols;
  }
  const float* xp = x;
  int64_t ldx = cols;
  if (ws[0].dtype == DType::kBF16) {
    ldx = internal::RoundUp(cols, internal::kBf16Block);
    float* packed = internal::Scratch<float>(n * ldx);
    internal::PackXDeinterleaved(x, n, cols, ldx, packed);
    xp = packed;
  }
  internal::ParallelForBlocks(
      static_cast<int64_t>(blocks.size()), work, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const Block& k = blocks[b];
          const WeightView& w = ws[k.matrix];
          if (w.dtype == DType::kBF16) {
            internal::Bf16RowsAvx512(xp, n, ldx,
                                     static_cast<const uint16_t*>(w.data), cols,
                                     k.r0, k.r1, ys[k.matrix], w.rows);
          } else {
            internal::F32RowsAvx512(x, n, static_cast<const float*>(w.data),
                                    cols, k.r0, k.r1, ys[k.matrix], w.rows);
          }
        }
      });
}

// Each thread takes the same share of every matrix's rows, so a thread's
// rows of one matrix stay contiguous (the AVX2 kernels split them into
// streams).
void MatMulGroupAvx2(const float* x, int64_t n, const WeightView* ws,
                     float* const* ys, int count) {
  constexpr int64_t kShares = 64;
  const int64_t cols = ws[0].cols;
  int64_t work = 0;
  for (int i = 0; i < count; ++i) work += n * ws[i].rows * cols;
  // Share boundaries on 8-row multiples, the last share taking the rest.
  auto bound = [](int64_t rows, int64_t s) {
    return s >= kShares ? rows : rows * s / kShares / 8 * 8;
  };
  internal::ParallelForBlocks(kShares, work, [&](int64_t s0, int64_t s1) {
    for (int i = 0; i < count; ++i) {
      const WeightView& w = ws[i];
      const int64_t r0 = bound(w.rows, s0);
      const int64_t r1 = bound(w.rows, s1);
      if (r0 >= r1) continue;
      if (w.dtype == DType::kF32) {
        internal::F32RowsAvx2(x, n, cols, static_cast<const float*>(w.data),
                              cols, r0, r1, ys[i], w.rows);
      } else {
        internal::Bf16RowsAvx2(x, n, cols, static_cast<const uint16_t*>(w.data),
                               cols, r0, r1, ys[i], w.rows);
      }
    }
  });
}

}  // namespace

void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                 float* const* ys, int count, const MatMulOptions& options) {
  if (n > 0 && count > 0 && ws[0].layout == WeightLayout::kPanels16 &&
      ws[0].cols > 0 && FusableGroup(ws, count, [](DType) { return true; })) {
    std::vector<internal::PanelProduct> ps(count);
    for (int i = 0; i < count; ++i) ps[i] = {ws[i].data, ws[i].rows, ys[i]};
    internal::MatMulPanels(x, n, ws[0].dtype, ws[0].cols, ps.data(), count);
    return;
  }
  if (n > 0 && count > 0 && ws[0].layout == WeightLayout::kRowMajor &&
      ws[0].cols > 0 && FusableGroup(ws, count, IsBlockQuantized)) {
    std::vector<internal::QuantProduct> ps(count);
    for (int i = 0; i < count; ++i) {
      ps[i] = {static_cast<const uint8_t*>(ws[i].data), ws[i].rows, ys[i]};
    }
    internal::MatMulQuantGroup(x, n, ws[0].dtype, ws[0].cols, ps.data(), count,
                               Q8MinInputs(options));
    return;
  }
  // Decode-sized products the streaming kernels handle: bf16 at any n the
  // rows kernels take; f32 at n = 1 (AVX-512) or up to kF32Avx2MaxRows
  // (AVX2), as MatMul chooses.
  const bool avx512 = internal::CpuHasAvx512Bf16();
  const bool avx2 = !avx512 && internal::CpuHasAvx2Fma();
  const int64_t bf16_max_rows = avx512 ? n : internal::kBf16Avx2MaxRows;
  const int64_t f32_max_rows =
      avx512 ? internal::kF32StreamMaxRows : internal::kF32Avx2MaxRows;
  auto ok = [&](DType d) {
    return (d == DType::kBF16 && n <= bf16_max_rows) ||
           (d == DType::kF32 && n <= f32_max_rows);
  };
  if ((avx512 || avx2) && ws[0].layout == WeightLayout::kRowMajor &&
      FusableGroup(ws, count, ok)) {
    if (avx512) {
      MatMulGroupAvx512(x, n, ws, ys, count);
    } else {
      MatMulGroupAvx2(x, n, ws, ys, count);
    }
    return;
  }
  for (int i = 0; i < count; ++i) MatMul(x, n, ws[i], ys[i], options);
}

}  // namespace latentkv::kernels
