// Test support shared by the kernel tests: float64 references and seeded
// random inputs.
#ifndef LATENTKV_KERNELS_REFERENCE_FOR_TESTS_H_
#define LATENTKV_KERNELS_REFERENCE_FOR_TESTS_H_

#include <cstdint>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace latentkv::kernels::testing {

// y[n, rows] = x[n, cols] * W^T in double; w: [rows, cols] row-major.
inline std::vector<double> RefMatMul(const std::vector<float>& x, int64_t n,
                                     const std::vector<float>& w, int64_t rows,
                                     int64_t cols) {
  std::vector<double> y(n * rows);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        s += static_cast<double>(x[j * cols + c]) * w[r * cols + c];
      }
      y[j * rows + r] = s;
    }
  }
  return y;
}

// n values uniform in [lo, hi) from a seeded generator.
inline std::vector<float> RandomVec(int64_t n, uint32_t seed, float lo = -1.0f,
                                    float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// w [rows, cols] stored in `dtype` (any float or block-quantized type) and
// the exact f32 values those bytes hold: what every product must multiply.
struct StoredWeights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};
inline StoredWeights Store(const std::vector<float>& w, DType dtype) {
  StoredWeights s;
  const int64_t n = static_cast<int64_t>(w.size());
  s.bytes.resize(DTypeRowBytes(dtype, n));
  ConvertFromF32(w.data(), n, dtype, s.bytes.data());
  s.values.resize(w.size());
  ConvertToF32(s.bytes.data(), dtype, n, s.values.data());
  return s;
}

}  // namespace latentkv::kernels::testing

#endif  // LATENTKV_KERNELS_REFERENCE_FOR_TESTS_H_
