// AVX2 + FMA + F16C dequantization of q5_0 / q5_1 and k-quant rows into
// f32 row tiles and 16-row panels (see quant_k.h). Compiled with -mavx2
// -mfma -mf16c; calls no inline library code.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/quant_k.h"
#include "kernels/cpu/quant_k_formats.h"

namespace latentkv::kernels::internal {
namespace quant_k {
namespace {

using avx2::Transpose8;
// One block into F::kElems floats in natural order.
template <typename F>
inline void DequantBlock(const uint8_t* blk, float* out) {
  if constexpr (F::kElems == 32) {
    float s, m;
    F::Prepare(blk, &s, &m);
    __m256 v[4];
    ExpandNatural(F::template Levels<0>(blk), v);
    for (int k = 0; k < 4; ++k) {
      _mm256_storeu_ps(out + 8 * k, _mm256_fmsub_ps(v[k], _mm256_set1_ps(s),
                                                    _mm256_set1_ps(m)));
    }
  } else {
    const Scales sc = F::Prepare(blk);
    Unroll<F::kElems / 32>([&]<int C>() {
      __m256 v[4];
      ExpandNatural(F::template Levels<C>(blk), v);
      for (int k = 0; k < 4; ++k) {
        // Elements 32C + 8k.. lie in sub-block (32C + 8k) / kSub.
        const int j = (32 * C + 8 * k) / F::kSub;
        const __m256 s = Lanes(sc.s[j / 8], j % 8);
        const __m256 m = Lanes(sc.m[j / 8], j % 8);
        _mm256_storeu_ps(out + 32 * C + 8 * k, _mm256_fmsub_ps(v[k], s, m));
      }
    });
  }
}

template <typename F>
void DequantRows(const uint8_t* w, int64_t cols, int64_t r0, int64_t r1,
                 float* dst) {
  const int64_t blocks = (r1 - r0) * (cols / F::kElems);
  const uint8_t* p = w + r0 * (cols / F::kElems) * F::kBytes;
  for (int64_t b = 0; b < blocks; ++b) {
    DequantBlock<F>(p + b * F::kBytes, dst + b * F::kElems);
  }
}

// Rows [r0, r1) into 16-row panels: per half panel (8 rows) and block, the
// 8 rows' blocks dequantized into a small buffer, then 8 x 8 tiles
// transposed so each column's 8 values are stored together.
template <typename F>
void DequantPanels(const uint8_t* w, int64_t cols, int64_t r0, int64_t r1,
                   float* dst) {
  const int64_t blocks = cols / F::kElems;
  const int64_t row_bytes = blocks * F::kBytes;
  alignas(32) float tmp[8][F::kElems];
  for (int64_t p = r0; p < r1; p += 16, dst += cols * 16) {
    for (int half = 0; half < 2; ++half) {
      const int64_t rb = p + 8 * half;
      const int64_t valid = rb >= r1 ? 0 : (r1 - rb < 8 ? r1 - rb : 8);
      for (int64_t b = 0; b < blocks; ++b) {
        for (int i = 0; i < 8; ++i) {
          if (i < valid) {
            DequantBlock<F>(w + (rb + i) * row_bytes + b * F::kBytes, tmp[i]);
          } else {
            for (int e = 0; e < F::kElems; e += 8) {
              _mm256_store_ps(tmp[i] + e, _mm256_setzero_ps());
            }
          }
        }
        for (int g = 0; g < F::kElems; g += 8) {
          __m256 v[8];
          for (int i = 0; i < 8; ++i) v[i] = _mm256_load_ps(tmp[i] + g);
          Transpose8(v);
          float* out = dst + (b * F::kElems + g) * 16 + 8 * half;
          for (int c = 0; c < 8; ++c) _mm256_storeu_ps(out + c * 16, v[c]);
        }
      }
    }
  }
}

}  // namespace
}  // namespace quant_k

void QuantKDequantRowsAvx2(const uint8_t* w, DType dtype, int64_t cols,
                           int64_t r0, int64_t r1, float* dst) {
  quant_k::WithFormat(dtype, [&]<typename F>() {
    quant_k::DequantRows<F>(w, cols, r0, r1, dst);
  });
}

void QuantKDequantPanelsAvx2(const uint8_t* w, DType dtype, int64_t cols,
                             int64_t r0, int64_t r1, float* dst) {
  quant_k::WithFormat(dtype, [&]<typename F>() {
    quant_k::DequantPanels<F>(w, cols, r0, r1, dst);
  });
}

}  // namespace latentkv::kernels::internal
