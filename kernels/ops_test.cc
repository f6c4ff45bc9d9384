// Tests of the dense ops of kernels/ops.h against float64 references.
#include "kernels/ops.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemv_avx2.h"
#include "kernels/cpu/internal.h"
#include "kernels/reference_for_tests.h"

namespace latentkv::kernels {
namespace {

using ::latentkv::kernels::testing::RandomVec;

using ::latentkv::kernels::testing::RefMatMul;

struct Shape {
  int64_t n, rows, cols;
};

std::vector<Shape> AwkwardShapes() {
  std::vector<Shape> shapes;
  for (int64_t n : {1, 3, 17}) {
    for (int64_t rows : {5, 129}) {
      for (int64_t cols : {7, 65, 768}) shapes.push_back({n, rows, cols});
    }
  }
  // Large enough for the multi-threaded paths.
  shapes.push_back({1, 2048, 768});
  shapes.push_back({6, 1000, 333});
  shapes.push_back({1, 3001, 100});  // thread ranges off the 16-row blocks
  // Prefill-sized batches (past kBf16Avx2MaxRows: the convert + BLAS path).
  shapes.push_back({70, 33, 65});
  // x too large for one L2 chunk in the AVX2 rows kernel (n * cols * 4 >
  // 192 KiB): two column chunks, the second with a 5-column tail.
  shapes.push_back({20, 37, 2501});
  return shapes;
}

using MatMulFn = void (*)(const float*, int64_t, const uint16_t*, int64_t,
                          int64_t, float*);

// Checks `run` on every awkward shape with weights rounded to `dtype`;
// tolerance = rel_tol * sqrt(cols) (inputs are uniform in [-1, 1]).
template <typename Run>
void CheckMatMul(DType dtype, double rel_tol, Run run,
                 const std::vector<Shape>& shapes = AwkwardShapes()) {
  for (const Shape& s : shapes) {
    SCOPED_TRACE("n=" + std::to_string(s.n) + " rows=" +
                 std::to_string(s.rows) + " cols=" + std::to_string(s.cols));
    const std::vector<float> x = RandomVec(s.n * s.cols, 1 + s.cols);
    std::vector<float> w = RandomVec(s.rows * s.cols, 7 + s.rows);
    std::vector<uint16_t> packed(w.size());
    if (dtype != DType::kF32) {
      ConvertFromF32(w.data(), w.size(), dtype, packed.data());
      ConvertToF32(packed.data(), dtype, w.size(), w.data());  // rounded
    }
    const std::vector<double> ref = RefMatMul(x, s.n, w, s.rows, s.cols);
    std::vector<float> y(s.n * s.rows, 12345.0f);
    run(x.data(), s.n,
        dtype == DType::kF32 ? static_cast<const void*>(w.data())
                             : packed.data(),
        s.rows, s.cols, y.data());
    const double tol = rel_tol * std::sqrt(static_cast<double>(s.cols));
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_NEAR(y[i], ref[i], tol) << "at " << i;
    }
  }
}

void ViaMatMul(DType dtype, const float* x, int64_t n, const void* w,
               int64_t rows, int64_t cols, float* y) {
  MatMul(x, n, WeightView{w, dtype, rows, cols}, y);
}

TEST(MatMulTest, F32) {
  CheckMatMul(DType::kF32, 1e-5,
              [](auto... a) { ViaMatMul(DType::kF32, a...); });
}

TEST(MatMulTest, Bf16) {
  CheckMatMul(DType::kBF16, 1e-5,
              [](auto... a) { ViaMatMul(DType::kBF16, a...); });
}

TEST(MatMulTest, F16) {
  CheckMatMul(DType::kF16, 1e-5,
              [](auto... a) { ViaMatMul(DType::kF16, a...); });
}

TEST(MatMulTest, F32SmallPath) {
  CheckMatMul(DType::kF32, 1e-5,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulF32Small(x, n, static_cast<const float*>(w),
                                         rows, cols, y);
              });
}

TEST(MatMulTest, F32PortablePath) {
  CheckMatMul(DType::kF32, 1e-5,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulF32Portable(x, n, static_cast<const float*>(w),
                                            rows, cols, y);
              });
}

TEST(MatMulTest, Bf16PortablePath) {
  CheckMatMul(DType::kBF16, 1e-5,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulBf16Portable(
                    x, n, static_cast<const uint16_t*>(w), rows, cols, y);
              });
}

TEST(MatMulTest, Bf16Avx512Paths) {
  if (!internal::CpuHasAvx512Bf16()) GTEST_SKIP() << "no AVX-512 BF16";
  CheckMatMul(DType::kBF16, 1e-5,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulBf16Avx512(
                    x, n, static_cast<const uint16_t*>(w), rows, cols, y);
              });
  // x rounded to bf16: relative error ~2^-9 per product.
  CheckMatMul(DType::kBF16, 5e-3,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulBf16Avx512Dp(
                    x, n, static_cast<const uint16_t*>(w), rows, cols, y);
              });
}

TEST(MatMulTest, Bf16Avx2Paths) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2/FMA";
  // Rows kernel (n <= kBf16Avx2MaxRows) and convert + BLAS (larger n): the
  // awkward shapes cover both, row tails and column tails of 1..7.
  CheckMatMul(DType::kBF16, 1e-5,
              [](const float* x, int64_t n, const void* w, int64_t rows,
                 int64_t cols, float* y) {
                internal::MatMulBf16Avx2(x, n, static_cast<const uint16_t*>(w),
                                         rows, cols, y);
              });
}

// The AVX2 kernels on their own (every n: the n = 1 streams kernel, the
// tiles, the chunked shape), over two row ranges, the second starting off
// zero (sub-range offsets) and the first not a multiple of a tile.
TEST(MatMulTest, Avx2RowsKernels) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2/FMA";
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dt));
    CheckMatMul(dt, 1e-5,
                [dt](const float* x, int64_t n, const void* w, int64_t rows,
                     int64_t cols, float* y) {
                  const int64_t mid = rows / 3;
                  for (auto [r0, r1] :
                       {std::pair{int64_t{0}, mid}, std::pair{mid, rows}}) {
                    if (dt == DType::kF32) {
                      internal::F32RowsAvx2(x, n, cols,
                                            static_cast<const float*>(w), cols,
                                            r0, r1, y, rows);
                    } else {
                      internal::Bf16RowsAvx2(x, n, cols,
                                             static_cast<const uint16_t*>(w),
                                             cols, r0, r1, y, rows);
                    }
                  }
                });
  }
}

// The awkward shapes plus every input count the panel kernels treat apart
// (1-5 streamed, groups of 6 with tails, past one 120-input block) and
// column counts across the 256-column chunks.
std::vector<Shape> PanelShapes() {
  std::vector<Shape> shapes = AwkwardShapes();
  for (int64_t n : {2, 4, 5, 6, 7, 12, 121, 130}) {
    shapes.push_back({n, 33, 300});
  }
  shapes.push_back({64, 2048, 513});  // threads, chunks, a 1-column tail
  shapes.push_back({2, 3001, 100});   // streams over thread ranges
  return shapes;
}

// Row-major weights packed into panels (PackPanels), then MatMul: the AVX2
// panel kernels on this CPU (else the portable loop).
void ViaPanels(DType dtype, const float* x, int64_t n, const void* w,
               int64_t rows, int64_t cols, float* y) {
  const WeightView row_major{w, dtype, rows, cols};
  std::vector<uint8_t> buf(PanelBytes(row_major) + 32);
  void* aligned =
      buf.data() + (32 - reinterpret_cast<uintptr_t>(buf.data()) % 32) % 32;
  const WeightView panels = PackPanels(row_major, aligned);
  ASSERT_EQ(panels.layout, WeightLayout::kPanels16);
  MatMul(x, n, panels, y);
}

TEST(MatMulTest, PanelsF32) {
  CheckMatMul(
      DType::kF32, 1e-5, [](auto... a) { ViaPanels(DType::kF32, a...); },
      PanelShapes());
}

TEST(MatMulTest, PanelsBf16) {
  CheckMatMul(
      DType::kBF16, 1e-5, [](auto... a) { ViaPanels(DType::kBF16, a...); },
      PanelShapes());
}

// The loop MatMul falls back to on panels without AVX2.
TEST(MatMulTest, PanelsPortablePath) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dt));
    CheckMatMul(dt, 1e-5,
                [dt](const float* x, int64_t n, const void* w, int64_t rows,
                     int64_t cols, float* y) {
                  const WeightView row_major{w, dt, rows, cols};
                  std::vector<uint8_t> buf(PanelBytes(row_major));
                  PackPanels(row_major, buf.data());
                  internal::MatMulPanelsPortable(x, n, buf.data(), dt, rows,
                                                 cols, y);
                });
  }
}

// Embedding rows read from panels equal those read from the row-major table.
TEST(EmbedTest, PanelsEqualRowMajor) {
  const int64_t vocab = 37, dim = 19;
  const std::vector<float> table = RandomVec(vocab * dim, 5);
  std::vector<uint16_t> bf16(table.size());
  ConvertFromF32(table.data(), table.size(), DType::kBF16, bf16.data());
  const std::vector<int32_t> tokens = {0, 15, 16, 17, 36, 5, 31};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const WeightView rm{dt == DType::kF32
                            ? static_cast<const void*>(table.data())
                            : bf16.data(),
                        dt, vocab, dim};
    std::vector<uint8_t> buf(PanelBytes(rm));
    const WeightView panels = PackPanels(rm, buf.data());
    std::vector<float> want(tokens.size() * dim), got(want.size());
    Embed(rm, tokens.data(), tokens.size(), want.data());
    Embed(panels, tokens.data(), tokens.size(), got.data());
    EXPECT_EQ(got, want) << DTypeName(dt);
  }
}

TEST(MatMulTest, ZeroColsGivesZeros) {
  std::vector<float> y(6, 3.0f);
  const float x = 0.0f;
  MatMul(&x, 2, WeightView{nullptr, DType::kBF16, 3, 0}, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(RmsNormTest, MatchesReferenceAndAliases) {
  for (int64_t dim : {7, 65, 768}) {
    const int64_t n = 5;
    const std::vector<float> x = RandomVec(n * dim, 3, -3.0f, 3.0f);
    const std::vector<float> w = RandomVec(dim, 4);
    const float eps = 1e-5f;
    std::vector<float> y(n * dim);
    RmsNorm(x.data(), w.data(), n, dim, eps, y.data());
    std::vector<float> inplace = x;
    RmsNorm(inplace.data(), w.data(), n, dim, eps, inplace.data());
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i)
        ss += double{x[t * dim + i]} * x[t * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i) {
        const double ref = x[t * dim + i] * inv * w[i];
        EXPECT_NEAR(y[t * dim + i], ref, 1e-5 * (1.0 + std::abs(ref)));
        EXPECT_EQ(inplace[t * dim + i], y[t * dim + i]);
      }
    }
  }
}

TEST(RopeTest, InvFreqStandard) {
  std::vector<float> f(4);
  RopeInvFreqStandard(8, 10000.0, f.data());
  for (int j = 0; j < 4; ++j) {
    EXPECT_FLOAT_EQ(f[j], static_cast<float>(std::pow(10000.0, -2.0 * j / 8)));
  }
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], 0.1f);  // 10000^(-1/4)
}

TEST(RopeTest, InvFreqFrequencyAwareHandComputed) {
  // d = 8: arange(2, 6, 2) = [2, 4], arange(6, 8, 1) = [6, 7].
  std::vector<float> f(4);
  RopeInvFreqFrequencyAware(8, 10000.0, f.data());
  const double e[4] = {2.0 / 8, 4.0 / 8, 6.0 / 8, 7.0 / 8};
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(f[j], static_cast<float>(std::pow(10000.0, -e[j]))) << j;
  }
  EXPECT_FLOAT_EQ(f[1], 0.01f);  // 10000^(-1/2)
}

TEST(RopeTest, InvFreqFrequencyAwareGeneral) {
  for (int64_t d : {4, 12, 64, 128}) {
    std::vector<double> e;
    for (int64_t k = d / 4; k < 3 * d / 4; k += 2) e.push_back(double(k) / d);
    for (int64_t k = 3 * d / 4; k < d; ++k) e.push_back(double(k) / d);
    ASSERT_EQ(static_cast<int64_t>(e.size()), d / 2);
    std::vector<float> f(d / 2);
    RopeInvFreqFrequencyAware(d, 500000.0, f.data());
    for (int64_t j = 0; j < d / 2; ++j) {
      EXPECT_EQ(f[j], static_cast<float>(std::pow(500000.0, -e[j])));
    }
  }
}

// `r` rotated channels of heads of width d (r = d: full RoPE); the rest must
// come back bit-identical.
void CheckRope(int64_t d, bool frequency_aware, int64_t r = -1) {
  if (r < 0) r = d;
  const int64_t n = 5, heads = 3, half = r / 2;
  std::vector<float> inv(half);
  if (frequency_aware) {
    RopeInvFreqFrequencyAware(r, 10000.0, inv.data());
  } else if (r > 0) {
    RopeInvFreqStandard(r, 10000.0, inv.data());
  }
  const std::vector<int32_t> pos = {0, 1, 7, 1000, 32767};
  const std::vector<float> x0 = RandomVec(n * heads * d, 11);
  std::vector<float> x = x0;
  ApplyRope(x.data(), n, heads, d, r, pos.data(), inv.data());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* a = &x0[(t * heads + h) * d];
      const float* b = &x[(t * heads + h) * d];
      for (int64_t j = 0; j < half; ++j) {
        const double ang = static_cast<double>(pos[t]) * inv[j];
        const double lo = a[j] * std::cos(ang) - a[j + half] * std::sin(ang);
        const double hi = a[j + half] * std::cos(ang) + a[j] * std::sin(ang);
        EXPECT_NEAR(b[j], lo, 2e-6);
        EXPECT_NEAR(b[j + half], hi, 2e-6);
      }
      for (int64_t j = r; j < d; ++j) EXPECT_EQ(b[j], a[j]) << j;
    }
  }
}

TEST(RopeTest, StandardMatchesRotation) {
  CheckRope(8, false);
  CheckRope(64, false);
  CheckRope(2, false);
}

TEST(RopeTest, PartialRotatesOnlyTheFirstChannels) {
  CheckRope(64, false, 16);
  CheckRope(8, false, 2);
  CheckRope(10, false, 4);
  CheckRope(8, false, 0);  // a position-free layer: nothing moves
}

TEST(RopeTest, FrequencyAwareMatchesRotation) {
  CheckRope(12, true);
  CheckRope(128, true);
}

TEST(RopeTest, LargeBatchUsesThreadsAndMatchesSerial) {
  const int64_t n = 300, heads = 8, d = 64;
  std::vector<float> inv(d / 2);
  RopeInvFreqStandard(d, 10000.0, inv.data());
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>(3 * t);
  std::vector<float> x = RandomVec(n * heads * d, 5);
  std::vector<float> one = x;
  ApplyRope(x.data(), n, heads, d, d, pos.data(), inv.data());
  for (int64_t t = 0; t < n; ++t) {
    ApplyRope(one.data() + t * heads * d, 1, heads, d, d, &pos[t], inv.data());
  }
  EXPECT_EQ(x, one);
}

TEST(SwiGluTest, MatchesReference) {
  for (int64_t n : {1, 17, 10000}) {
    std::vector<float> g = RandomVec(n, 8, -8.0f, 8.0f);
    // Saturated and extreme gates (exp(-g) would overflow for g < -88).
    const float extremes[] = {-1e4f, -100.0f, -88.5f, -20.0f, 0.0f,
                              20.0f, 88.5f,   100.0f, 1e4f};
    for (size_t i = 0; i < std::size(extremes) && i < g.size(); ++i) {
      g[i * g.size() / std::size(extremes)] = extremes[i];
    }
    const std::vector<float> u = RandomVec(n, 9, -2.0f, 2.0f);
    std::vector<float> out(n);
    SwiGlu(g.data(), u.data(), n, out.data());
    std::vector<float> alias = g;
    SwiGlu(alias.data(), u.data(), n, alias.data());
    for (int64_t i = 0; i < n; ++i) {
      const double ref = g[i] / (1.0 + std::exp(-double{g[i]})) * u[i];
      EXPECT_NEAR(out[i], ref, 1e-6 * (1.0 + std::abs(ref)));
      EXPECT_EQ(alias[i], out[i]);
    }
  }
}

// GeGLU against the float64 tanh-GELU formula, including saturated gates
// (tanh(+-large) = +-1: gelu_tanh(g) -> g or 0), and with out aliasing gate.
TEST(GeluTanhGluTest, MatchesReference) {
  for (int64_t n : {1, 17, 10000}) {
    std::vector<float> g = RandomVec(n, 18, -6.0f, 6.0f);
    const float extremes[] = {-1e4f, -30.0f, -5.0f, 0.0f, 5.0f, 30.0f, 1e4f};
    for (size_t i = 0; i < std::size(extremes) && i < g.size(); ++i) {
      g[i * g.size() / std::size(extremes)] = extremes[i];
    }
    const std::vector<float> u = RandomVec(n, 19, -2.0f, 2.0f);
    std::vector<float> out(n);
    GeluTanhGlu(g.data(), u.data(), n, out.data());
    std::vector<float> alias = g;
    GeluTanhGlu(alias.data(), u.data(), n, alias.data());
    for (int64_t i = 0; i < n; ++i) {
      const double x = g[i];
      const double ref =
          0.5 * x *
          (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))) *
          u[i];
      EXPECT_NEAR(out[i], ref, 1e-6 * (1.0 + std::abs(ref))) << "gate " << x;
      EXPECT_EQ(alias[i], out[i]);
    }
  }
}

TEST(AddInPlaceTest, Adds) {
  std::vector<float> y = RandomVec(65, 1);
  const std::vector<float> x = RandomVec(65, 2);
  const std::vector<float> y0 = y;
  AddInPlace(y.data(), x.data(), 65);
  for (int i = 0; i < 65; ++i) EXPECT_EQ(y[i], y0[i] + x[i]);
}

TEST(EmbedTest, AllDTypes) {
  const int64_t vocab = 10, dim = 7;
  const std::vector<float> table = RandomVec(vocab * dim, 3);
  const std::vector<int32_t> tokens = {3, 0, 9, 3};
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<uint8_t> data(vocab * dim * DTypeSize(dt));
    ConvertFromF32(table.data(), table.size(), dt, data.data());
    std::vector<float> out(tokens.size() * dim);
    Embed(WeightView{data.data(), dt, vocab, dim}, tokens.data(), tokens.size(),
          out.data());
    for (size_t t = 0; t < tokens.size(); ++t) {
      std::vector<float> row(dim);
      ConvertToF32(data.data() + tokens[t] * dim * DTypeSize(dt), dt, dim,
                   row.data());
      for (int64_t i = 0; i < dim; ++i) {
        EXPECT_EQ(out[t * dim + i], row[i]);
        EXPECT_NEAR(out[t * dim + i], table[tokens[t] * dim + i], 4e-3);
      }
    }
  }
}

TEST(BandwidthTest, ReturnsPlausibleNumber) {
  const double bw = MeasureReadBandwidth(int64_t{16} << 20, 2);
  EXPECT_GT(bw, 1e8);   // > 0.1 GB/s
  EXPECT_LT(bw, 1e13);  // < 10 TB/s
}

}  // namespace
}  // namespace latentkv::kernels

namespace latentkv::kernels {
namespace {

// MatMulGroup runs several products in one parallel region (fused paths) or
// one after another (fallback): each result must match a float64 product
// with the same (rounded) weights. The large case spreads over threads.
TEST(MatMulGroupTest, MatchesReference) {
  struct Case {
    int64_t n, cols;
    std::vector<int64_t> rows;
  };
  const std::vector<Case> cases = {{1, 200, {129, 40, 40}},
                                   {3, 200, {129, 40, 40}},
                                   {1, 200, {1029, 700, 13}},
                                   {5, 200, {1029, 700, 13}},
                                   {40, 300, {129, 40, 40}}};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Case& c : cases) {
      const int count = static_cast<int>(c.rows.size());
      std::vector<std::vector<uint8_t>> store(count);
      std::vector<std::vector<float>> rounded(count);
      std::vector<WeightView> ws(count);
      for (int i = 0; i < count; ++i) {
        rounded[i] = RandomVec(c.rows[i] * c.cols, 20 + i, -2.0f, 2.0f);
        store[i].resize(rounded[i].size() * DTypeSize(dt));
        ConvertFromF32(rounded[i].data(), rounded[i].size(), dt,
                       store[i].data());
        ConvertToF32(store[i].data(), dt, rounded[i].size(), rounded[i].data());
        ws[i] = {store[i].data(), dt, c.rows[i], c.cols};
      }
      const std::vector<float> x = RandomVec(c.n * c.cols, 30);
      std::vector<std::vector<float>> got(count);
      std::vector<float*> ys(count);
      for (int i = 0; i < count; ++i) {
        got[i].assign(c.n * c.rows[i], 12345.0f);
        ys[i] = got[i].data();
      }
      // Row-major, then the same weights in panels.
      std::vector<std::vector<uint8_t>> panel_store(count);
      std::vector<WeightView> panels(count);
      for (int i = 0; i < count; ++i) {
        panel_store[i].resize(PanelBytes(ws[i]));
        panels[i] = PackPanels(ws[i], panel_store[i].data());
      }
      for (const auto* views : {&ws, &panels}) {
        for (int i = 0; i < count; ++i) got[i].assign(got[i].size(), 12345.0f);
        MatMulGroup(x.data(), c.n, views->data(), ys.data(), count);
        for (int i = 0; i < count; ++i) {
          const std::vector<double> want =
              RefMatMul(x, c.n, rounded[i], c.rows[i], c.cols);
          for (size_t k = 0; k < want.size(); ++k) {
            ASSERT_NEAR(got[i][k], want[k], 1e-4 * (1 + std::abs(want[k])))
                << DTypeName(dt) << " n=" << c.n << " matrix " << i << " at "
                << k << (views == &panels ? " (panels)" : "");
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels
