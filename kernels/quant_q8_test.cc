// Int8 activations (ActivationQuant::kQ8, kernels/cpu/quant_q8.h) over every
// block-quantized weight format, against two independent expectations:
// - a scalar float64 implementation of the scheme written here from the
//   header's contract (x^ = d * round-half-even(x * 127 / amax) per block of
//   32, then sum w * x^ over the dequantized weights): equal to f32
//   rounding, so every level, scale and offset lands where it should;
// - the exact float64 product with f32 x: within the stated bound
//   sum_b (d_b / 2) sum_{c in b} |w_c|, and not equal to it (the int8 path
//   really ran).
#include "kernels/cpu/quant_q8.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/quant.h"
#include "kernels/ops.h"
#include "kernels/reference_for_tests.h"

namespace latentkv::kernels {
namespace {

using ::latentkv::kernels::testing::RandomVec;
using ::latentkv::kernels::testing::Store;
using ::latentkv::kernels::testing::StoredWeights;

constexpr DType kTypes[] = {
    DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
    DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

MatMulOptions Q8() {
  MatMulOptions o;
  o.activations = ActivationQuant::kQ8;
  return o;
}

// The header's activation rounding, in double.
std::vector<double> QuantizedActivations(const std::vector<float>& x) {
  std::vector<double> xh(x.size());
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0.0f;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[b + k]));
    const float id = amax == 0.0f ? 0.0f : 127.0f / amax;
    const double d = amax / 127.0f;  // the kernel's f32 scale
    for (int k = 0; k < 32; ++k) {
      xh[b + k] = d * std::nearbyint(double{x[b + k] * id});
    }
  }
  return xh;
}

struct Expectation {
  double exact;      // sum w x (float64, f32 x)
  double quantized;  // sum w x^
  double bound;      // sum_b d_b / 2 * sum |w| over the block
  // For the f32 rounding tolerance: sum over blocks of max |w| in the block
  // times sum |x^| (the kernels scale levels and subtract offsets of up to
  // the block's largest weight, as kquant_test.cc says).
  double scale;
};

Expectation Expect(const std::vector<float>& x, const std::vector<double>& xh,
                   int64_t j, const std::vector<float>& w, int64_t r,
                   int64_t cols) {
  Expectation e{};
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0.0f;
    double wabs = 0.0, wmax = 0.0, xabs = 0.0;
    for (int k = 0; k < 32; ++k) {
      const int64_t c = 32 * b + k;
      const double wc = w[r * cols + c];
      amax = std::max(amax, std::fabs(x[j * cols + c]));
      e.exact += wc * x[j * cols + c];
      e.quantized += wc * xh[j * cols + c];
      wabs += std::fabs(wc);
      wmax = std::max(wmax, std::fabs(wc));
      xabs += std::fabs(xh[j * cols + c]);
    }
    e.bound += amax / 127.0 / 2.0 * wabs;
    e.scale += wmax * xabs;
  }
  return e;
}

struct Shape {
  int64_t n, rows, cols;
};

// Input counts around the kernel's 2 x 4 (q8_0: 2 x 3) blocks and the
// 16-row tiles; rows odd and past a tile; columns one and several blocks.
std::vector<Shape> Shapes(DType t) {
  const int64_t be = DTypeBlockElems(t);
  std::vector<Shape> shapes;
  for (int64_t n : {2, 3, 4, 5, 7, 13}) {
    for (int64_t rows : {1, 2, 17, 35}) {
      for (int64_t cols : {be, 3 * be}) shapes.push_back({n, rows, cols});
    }
  }
  shapes.push_back({64, 203, 8 * be});  // several threads
  return shapes;
}

TEST(QuantQ8Test, MatchesTheSchemeAndStaysWithinItsBound) {
  if (!internal::CpuHasAvx2FmaF16c()) GTEST_SKIP() << "no AVX2: exact path";
  for (DType dt : kTypes) {
    int64_t inexact = 0;
    for (const Shape& s : Shapes(dt)) {
      SCOPED_TRACE(std::string(DTypeName(dt)) + " n=" + std::to_string(s.n) +
                   " rows=" + std::to_string(s.rows) +
                   " cols=" + std::to_string(s.cols));
      std::vector<float> x = RandomVec(s.n * s.cols, 3 + s.n + s.cols);
      // An outlier per row (activations have them), and an all-zero block.
      for (int64_t j = 0; j < s.n; ++j) x[j * s.cols + (5 * j) % s.cols] = 9.0f;
      for (int k = 0; k < 32; ++k) x[k] = 0.0f;
      const std::vector<double> xh = QuantizedActivations(x);
      const StoredWeights w =
          Store(RandomVec(s.rows * s.cols, 11 + s.rows, -0.8f, 1.2f), dt);
      std::vector<float> y(s.n * s.rows, 12345.0f);
      MatMul(x.data(), s.n, WeightView{w.bytes.data(), dt, s.rows, s.cols},
             y.data(), Q8());
      for (int64_t j = 0; j < s.n; ++j) {
        for (int64_t r = 0; r < s.rows; ++r) {
          const Expectation e = Expect(x, xh, j, w.values, r, s.cols);
          const double got = y[j * s.rows + r];
          const double rounding = 4e-6 * e.scale + 1e-6;
          ASSERT_NEAR(got, e.quantized, rounding) << "j=" << j << " r=" << r;
          ASSERT_LE(std::fabs(got - e.exact), e.bound + rounding)
              << "j=" << j << " r=" << r;
          if (std::fabs(got - e.exact) > 1e-3 * e.bound) ++inexact;
        }
      }
    }
    // The products differ from the exact ones: the int8 path ran.
    EXPECT_GT(inexact, 0) << DTypeName(dt);
  }
}

// MatMulGroup with int8 activations gives each matrix MatMul's result.
TEST(QuantQ8Test, GroupEqualsSingleProducts) {
  for (DType dt : {DType::kQ4_1, DType::kQ6_K}) {
    const int64_t cols = 2 * DTypeBlockElems(dt), n = 9;
    const std::vector<float> x = RandomVec(n * cols, 5);
    const StoredWeights a = Store(RandomVec(40 * cols, 6), dt);
    const StoredWeights b = Store(RandomVec(24 * cols, 7), dt);
    const WeightView ws[2] = {{a.bytes.data(), dt, 40, cols},
                              {b.bytes.data(), dt, 24, cols}};
    std::vector<float> ya(n * 40), yb(n * 24), ga(n * 40), gb(n * 24);
    MatMul(x.data(), n, ws[0], ya.data(), Q8());
    MatMul(x.data(), n, ws[1], yb.data(), Q8());
    float* ys[2] = {ga.data(), gb.data()};
    MatMulGroup(x.data(), n, ws, ys, 2, Q8());
    EXPECT_EQ(ga, ya) << DTypeName(dt);
    EXPECT_EQ(gb, yb) << DTypeName(dt);
  }
}

// One input keeps the exact fused kernels; f32 and bf16 weights ignore the
// option.
TEST(QuantQ8Test, ExactWhereTheInt8PathDoesNotApply) {
  const int64_t cols = 64, rows = 20;
  const std::vector<float> x = RandomVec(3 * cols, 8);
  const StoredWeights q = Store(RandomVec(rows * cols, 9), DType::kQ4_0);
  std::vector<float> exact(rows), got(rows);
  MatMul(x.data(), 1, WeightView{q.bytes.data(), DType::kQ4_0, rows, cols},
         exact.data());
  MatMul(x.data(), 1, WeightView{q.bytes.data(), DType::kQ4_0, rows, cols},
         got.data(), Q8());
  EXPECT_EQ(got, exact);
  // q8_min_inputs = 1 quantizes the one input too (within the bound).
  MatMulOptions all = Q8();
  all.q8_min_inputs = 1;
  MatMul(x.data(), 1, WeightView{q.bytes.data(), DType::kQ4_0, rows, cols},
         got.data(), all);
  if (internal::CpuHasAvx2FmaF16c()) {
    const std::vector<double> xh =
        QuantizedActivations(std::vector<float>(x.begin(), x.begin() + cols));
    for (int64_t r = 0; r < rows; ++r) {
      const Expectation e = Expect(x, xh, 0, q.values, r, cols);
      EXPECT_NEAR(got[r], e.quantized, 4e-6 * e.scale + 1e-6) << r;
    }
    EXPECT_NE(got, exact);
  }
  const std::vector<float> wf = RandomVec(rows * cols, 10);
  std::vector<float> f_exact(3 * rows), f_got(3 * rows);
  MatMul(x.data(), 3, WeightView{wf.data(), DType::kF32, rows, cols},
         f_exact.data());
  MatMul(x.data(), 3, WeightView{wf.data(), DType::kF32, rows, cols},
         f_got.data(), Q8());
  EXPECT_EQ(f_got, f_exact);
}

// A non-finite activation makes the outputs it feeds non-finite (never a
// finite wrong number); the other inputs are unaffected.
TEST(QuantQ8Test, NonFiniteActivationsPropagate) {
  if (!internal::CpuHasAvx2FmaF16c()) GTEST_SKIP() << "no AVX2: exact path";
  const int64_t cols = 64, rows = 5, n = 3;
  for (float bad : {std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<float> x = RandomVec(n * cols, 12);
    x[cols + 40] = bad;  // input 1, second block
    const StoredWeights w = Store(RandomVec(rows * cols, 13), DType::kQ8_0);
    std::vector<float> y(n * rows);
    MatMul(x.data(), n, WeightView{w.bytes.data(), DType::kQ8_0, rows, cols},
           y.data(), Q8());
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_TRUE(std::isfinite(y[r])) << r;
      EXPECT_FALSE(std::isfinite(y[rows + r])) << r;
      EXPECT_TRUE(std::isfinite(y[2 * rows + r])) << r;
    }
  }
}

// The backend option: the CPU backend takes it; any other backend refuses
// it by name instead of silently computing something else.
TEST(QuantQ8Test, BackendOption) {
  BackendOptions o;
  o.cpu_activations = ActivationQuant::kQ8;
  auto cpu = CreateBackend("cpu", o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const int64_t cols = 64, rows = 8, n = 4;
  const std::vector<float> x = RandomVec(n * cols, 14);
  const StoredWeights w = Store(RandomVec(rows * cols, 15), DType::kQ4_1);
  const WeightView v{w.bytes.data(), DType::kQ4_1, rows, cols};
  std::vector<float> via_backend(n * rows), direct(n * rows);
  (*cpu)->MatMul(x.data(), n, v, via_backend.data());
  MatMul(x.data(), n, v, direct.data(), Q8());
  EXPECT_EQ(via_backend, direct);
  EXPECT_EQ(*ParseActivationQuant("q8"), ActivationQuant::kQ8);
  EXPECT_EQ(*ParseActivationQuant("f32"), ActivationQuant::kF32);
  for (const char* bad : {"", "int8", "Q8", "f16"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseActivationQuant(bad).status()))
        << bad;
  }
  for (const char* other : {"cuda", "cuda:1", "nope"}) {
    auto b = CreateBackend(other, o);
    EXPECT_FALSE(b.ok()) << other;
    if (std::string(other) != "nope") {
      EXPECT_TRUE(absl::IsInvalidArgument(b.status())) << b.status();
      EXPECT_NE(b.status().message().find("cpu backend option"),
                std::string::npos);
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels
