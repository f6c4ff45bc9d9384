// Weights in 16-row panels (WeightLayout::kPanels16): packing, and MatMul
// over them (AVX2 panel kernels, or a portable loop).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/gemm_avx2.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace internal {
namespace {

int64_t Panels(int64_t rows) { return (rows + kPanelRows - 1) / kPanelRows; }

float Value(float v) { return v; }
float Value(uint16_t v) { return Bf16ToF32(v); }

template <typename T>
void Pack(const T* src, int64_t rows, int64_t cols, DType dtype, T* dst) {
  const int64_t panels = Panels(rows);
  std::memset(dst, 0, panels * kPanelRows * cols * sizeof(T));
  for (int64_t r = 0; r < rows; ++r) {
    T* out = dst + (r / kPanelRows) * cols * kPanelRows +
             PanelSlot(dtype, r % kPanelRows);
    const T* in = src + r * cols;
    for (int64_t c = 0; c < cols; ++c) out[c * kPanelRows] = in[c];
  }
}

// One thread's share of the panels of one product, without AVX2.
template <typename T>
void PortablePanels(const float* x, int64_t n, const T* w, DType dtype,
                    int64_t rows, int64_t cols, int64_t p0, int64_t p1,
                    float* y) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* panel = w + p * cols * kPanelRows;
    const int64_t valid = std::min(kPanelRows, rows - p * kPanelRows);
    for (int64_t j = 0; j < n; ++j) {
      float acc[kPanelRows] = {};
      const float* xj = x + j * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const T* col = panel + c * kPanelRows;
        for (int64_t i = 0; i < kPanelRows; ++i) {
          acc[i] += xj[c] * Value(col[PanelSlot(dtype, i)]);
        }
      }
      for (int64_t i = 0; i < valid; ++i) {
        y[j * rows + p * kPanelRows + i] = acc[i];
      }
    }
  }
}

}  // namespace

void MatMulPanels(const float* x, int64_t n, DType dtype, int64_t cols,
                  const PanelProduct* ps, int count) {
  if (n <= 0 || count <= 0) return;
  const bool avx2 = CpuHasAvx2Fma();
  // Inputs packed once for every product and thread (n = 1 reads x as is).
  const float* xp = nullptr;
  if (avx2 && n > 1) {
    thread_local std::vector<float> buf;
    buf.resize(PackedInputFloats(n, cols));
    PackInputs(x, n, cols, cols, buf.data());
    xp = buf.data();
  }
  int64_t work = 0;
  for (int i = 0; i < count; ++i) work += n * ps[i].rows * cols;
  // Each thread takes the same share of every product's panels, so its
  // panels of one product stay contiguous (the kernels split them into
  // streams).
  constexpr int64_t kShares = 64;
  ParallelForBlocks(kShares, work, [&](int64_t s0, int64_t s1) {
    for (int i = 0; i < count; ++i) {
      const PanelProduct& m = ps[i];
      const int64_t panels = Panels(m.rows);
      const int64_t p0 = panels * s0 / kShares, p1 = panels * s1 / kShares;
      if (p0 >= p1) continue;
      auto run = [&](const auto* w) {
        if (avx2) {
          PanelsAvx2(x, xp, n, w, m.rows, cols, p0, p1, m.y, m.rows);
        } else {
          PortablePanels(x, n, w, dtype, m.rows, cols, p0, p1, m.y);
        }
      };
      if (dtype == DType::kBF16) {
        run(static_cast<const uint16_t*>(m.w));
      } else {
        run(static_cast<const float*>(m.w));
      }
    }
  });
}

void MatMulPanelsPortable(const float* x, int64_t n, const void* w, DType dtype,
                          int64_t rows, int64_t cols, float* y) {
  if (dtype == DType::kBF16) {
    PortablePanels(x, n, static_cast<const uint16_t*>(w), dtype, rows, cols, 0,
                   Panels(rows), y);
  } else {
    PortablePanels(x, n, static_cast<const float*>(w), dtype, rows, cols, 0,
                   Panels(rows), y);
  }
}

}  // namespace internal

bool PrefersPanels(DType dtype) {
  return (dtype == DType::kF32 || dtype == DType::kBF16) &&
         internal::CpuHasAvx2Fma() && !internal::CpuHasAvx512Bf16();
}

int64_t PanelBytes(const WeightView& w) {
  return internal::Panels(w.rows) * internal::kPanelRows * w.cols *
         DTypeSize(w.dtype);
}

WeightView PackPanels(const WeightView& w, void* dst) {
  LATENTKV_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16,
                 "PackPanels of ", std::string(DTypeName(w.dtype)),
                 ": only f32 and bf16");
  WeightView out = w;
  out.data = dst;
  out.layout = WeightLayout::kPanels16;
  if (w.dtype == DType::kBF16) {
    internal::Pack(static_cast<const uint16_t*>(w.data), w.rows, w.cols,
                   w.dtype, static_cast<uint16_t*>(dst));
  } else {
    internal::Pack(static_cast<const float*>(w.data), w.rows, w.cols, w.dtype,
                   static_cast<float*>(dst));
  }
  return out;
}

}  // namespace latentkv::kernels
