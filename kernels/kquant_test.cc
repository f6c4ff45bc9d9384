// The kernels over q5_0 / q5_1 and k-quant weights (kernels/cpu/quant_k.h)
// against float64 references over the dequantized weights (ConvertToF32):
// MatMul at every path (n = 1 fused, row tiles, panels, portable),
// MatMulGroup, Embed, and the AVX2 dequantization bit for bit.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cpu/quant.h"
#include "kernels/ops.h"
#include "kernels/reference_for_tests.h"

namespace latentkv::kernels {
namespace {

using ::latentkv::kernels::testing::RandomVec;
using ::latentkv::kernels::testing::RefMatMul;
using ::latentkv::kernels::testing::Store;
using ::latentkv::kernels::testing::StoredWeights;

constexpr DType kTypes[] = {DType::kQ5_0, DType::kQ5_1, DType::kQ2_K,
                            DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                            DType::kQ6_K};

std::string Name(DType t) { return std::string(DTypeName(t)); }

// f32 rounding tolerance of y[j, r]: units of 2^-24 relative to
// sum_c |x[j, c]| * A(r, c), A the largest magnitude in the 32-element chunk
// holding (r, c). The kernels scale per sub-block (S * (q . x)) and
// subtract per sub-block offsets times sum(x) (q3_K / q6_K / q5_0 fold their
// signed levels into offsets of up to 32 S), hence 4e-6 rather than 1e-6.
double Tolerance(const std::vector<float>& x, int64_t j,
                 const std::vector<float>& w, int64_t r, int64_t cols) {
  double s = 0.0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    double a = 0.0, xs = 0.0;
    for (int k = 0; k < 32; ++k) {
      a = std::max(a, std::fabs(double{w[r * cols + b * 32 + k]}));
      xs += std::fabs(double{x[j * cols + b * 32 + k]});
    }
    s += a * xs;
  }
  return 4e-6 * s + 1e-6;
}

// Column counts: whole blocks of the dtype, one and several.
std::vector<int64_t> ColsFor(DType t) {
  if (IsKQuant(t)) return {256, 768, 2048};
  return {32, 96, 640};
}

struct Shape {
  int64_t n, rows, cols;
};

std::vector<Shape> Shapes(DType t) {
  std::vector<Shape> shapes;
  for (int64_t n : {1, 2, 5, 17, 48, 64, 130}) {
    for (int64_t rows : {1, 17, 33}) {
      for (int64_t cols : ColsFor(t)) shapes.push_back({n, rows, cols});
    }
  }
  // Multi-threaded (n * rows * cols >= 2^18), row counts off the streams',
  // tiles' and panels' multiples.
  const int64_t c = ColsFor(t).back();
  shapes.push_back({1, 1001, c});
  shapes.push_back({1, 641, c});
  shapes.push_back({3, 517, c});
  shapes.push_back({16, 203, c});
  shapes.push_back({64, 131, c});
  return shapes;
}

using QuantRun = void (*)(const float* x, int64_t n, const uint8_t* w, DType dt,
                          int64_t rows, int64_t cols, float* y);

void CheckMatMul(DType dt, QuantRun run) {
  for (const Shape& s : Shapes(dt)) {
    SCOPED_TRACE(Name(dt) + " n=" + std::to_string(s.n) + " rows=" +
                 std::to_string(s.rows) + " cols=" + std::to_string(s.cols));
    const std::vector<float> x = RandomVec(s.n * s.cols, 1 + s.cols + s.n);
    // Offset weights, so the mins and the folded offsets matter.
    const StoredWeights w =
        Store(RandomVec(s.rows * s.cols, 7 + s.rows, -0.7f, 1.3f), dt);
    const std::vector<double> ref = RefMatMul(x, s.n, w.values, s.rows, s.cols);
    std::vector<float> y(s.n * s.rows, 12345.0f);
    run(x.data(), s.n, w.bytes.data(), dt, s.rows, s.cols, y.data());
    for (int64_t j = 0; j < s.n; ++j) {
      for (int64_t r = 0; r < s.rows; ++r) {
        ASSERT_NEAR(y[j * s.rows + r], ref[j * s.rows + r],
                    Tolerance(x, j, w.values, r, s.cols))
            << "j=" << j << " r=" << r;
      }
    }
  }
}

TEST(KQuantMatMulTest, MatMulMatchesReference) {
  for (DType dt : kTypes) {
    CheckMatMul(dt, [](const float* x, int64_t n, const uint8_t* w, DType dt,
                       int64_t rows, int64_t cols, float* y) {
      MatMul(x, n, WeightView{w, dt, rows, cols}, y);
    });
  }
}

TEST(KQuantMatMulTest, PortablePath) {
  for (DType dt : kTypes) CheckMatMul(dt, internal::MatMulQuantPortable);
}

// Unit vectors read every weight back exactly through every path (each
// product S * q is exact and the offset subtracts once): checks each
// element's position in the decoded lanes.
TEST(KQuantMatMulTest, UnitVectorsReadWeightsExactly) {
  for (DType dt : kTypes) {
    SCOPED_TRACE(Name(dt));
    const int64_t cols = DTypeBlockElems(dt) * 2, rows = 3;
    const StoredWeights w = Store(RandomVec(rows * cols, 31, -1.5f, 0.9f), dt);
    const WeightView v{w.bytes.data(), dt, rows, cols};
    std::vector<float> eye(cols * cols, 0.0f);
    for (int64_t c = 0; c < cols; ++c) eye[c * cols + c] = 1.0f;
    // n = 1 per column; then 7 (row tiles) and 64 (panels) columns at once.
    std::vector<float> y(cols * rows);
    for (int64_t c = 0; c < cols; ++c) {
      MatMul(eye.data() + c * cols, 1, v, y.data());
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_EQ(y[r], w.values[r * cols + c]) << "n=1 r=" << r << " c=" << c;
      }
    }
    for (int64_t n : {int64_t{7}, int64_t{64}}) {
      MatMul(eye.data(), n, v, y.data());
      for (int64_t c = 0; c < n; ++c) {
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(y[c * rows + r], w.values[r * cols + c])
              << "n=" << n << " r=" << r << " c=" << c;
        }
      }
    }
  }
}

// The blocks gguf-py decoded for ggml_quants_test (random bytes with f16
// scales from subnormal to 65504, negative scales and mins, all-0 and all-1
// quant bits): the AVX2 dequantization equals ConvertToF32, and
// the n = 1 kernel matches the reference over them.
TEST(KQuantMatMulTest, RawBlocksOfEveryBitPattern) {
  const struct {
    DType t;
    const char* file;
  } cases[] = {{DType::kQ5_0, "q5_0"}, {DType::kQ5_1, "q5_1"},
               {DType::kQ2_K, "q2_k"}, {DType::kQ3_K, "q3_k"},
               {DType::kQ4_K, "q4_k"}, {DType::kQ5_K, "q5_k"},
               {DType::kQ6_K, "q6_k"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    std::ifstream in(std::string(LATENTKV_SOURCE_DIR) +
                         "/model/gguf/testdata/ggml_quants/" + c.file + ".bin",
                     std::ios::binary);
    ASSERT_TRUE(in);
    const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    const int64_t be = DTypeBlockElems(c.t), bb = DTypeBlockBytes(c.t);
    const int64_t blocks = data.size() / (bb + 4 * be);
    // Rows of 2 blocks (an odd count of rows when blocks is even: drop one).
    const int64_t rows = blocks / 2 - (blocks / 2 % 2 == 0 ? 1 : 0);
    const int64_t cols = 2 * be;
    std::vector<float> want(rows * cols);
    ConvertToF32(data.data(), c.t, rows * cols, want.data());
    if (internal::CpuHasAvx2FmaF16c()) {
      std::vector<float> got(rows * cols);
      internal::DequantRowsAvx2(data.data(), c.t, cols, 0, rows, got.data());
      // Equal values (a zero may differ in sign: S * q - M gives +0 where
      // the scalar S * (q - 32) gives -0 for a negative S).
      for (int64_t i = 0; i < rows * cols; ++i) {
        ASSERT_EQ(got[i], want[i]) << i;
      }
    }
    const std::vector<float> x = RandomVec(cols, 3, -1.0f, 1.0f);
    const std::vector<double> ref = RefMatMul(x, 1, want, rows, cols);
    std::vector<float> y(rows);
    MatMul(x.data(), 1, WeightView{data.data(), c.t, rows, cols}, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_NEAR(y[r], ref[r], Tolerance(x, 0, want, r, cols)) << r;
    }
  }
}

// The multi-threaded products equal the one-thread ones bit for bit (a
// row's sum does not depend on the split).
TEST(KQuantMatMulTest, ThreadSplitsDoNotChangeResults) {
  if (omp_get_max_threads() < 2) GTEST_SKIP() << "one thread";
  for (DType dt : kTypes) {
    const int64_t cols = ColsFor(dt).back();
    for (const Shape& s :
         {Shape{1, 1001, cols}, Shape{5, 517, cols}, Shape{64, 203, cols}}) {
      SCOPED_TRACE(Name(dt) + " n=" + std::to_string(s.n));
      const std::vector<float> x = RandomVec(s.n * s.cols, 2);
      const StoredWeights w = Store(RandomVec(s.rows * s.cols, 3), dt);
      const WeightView v{w.bytes.data(), dt, s.rows, s.cols};
      std::vector<float> many(s.n * s.rows), one(s.n * s.rows);
      MatMul(x.data(), s.n, v, many.data());
      const int threads = omp_get_max_threads();
      omp_set_num_threads(1);
      MatMul(x.data(), s.n, v, one.data());
      omp_set_num_threads(threads);
      EXPECT_EQ(many, one);
    }
  }
}

// Q/K/V- and gate/up-like groups through MatMulGroup.
TEST(KQuantMatMulTest, GroupMatchesReference) {
  for (DType dt : kTypes) {
    const int64_t cols = ColsFor(dt)[1];
    const std::vector<std::vector<int64_t>> groups = {{129, 33, 33},
                                                      {301, 301}};
    for (const auto& rows : groups) {
      for (int64_t n : {1, 3, 64}) {
        SCOPED_TRACE(Name(dt) + " n=" + std::to_string(n));
        const std::vector<float> x = RandomVec(n * cols, 3 + n);
        std::vector<StoredWeights> ws;
        std::vector<WeightView> views;
        std::vector<std::vector<float>> ys;
        for (size_t i = 0; i < rows.size(); ++i) {
          ws.push_back(
              Store(RandomVec(rows[i] * cols, 11 + i, -1.2f, 0.8f), dt));
          ys.emplace_back(n * rows[i], 12345.0f);
        }
        std::vector<float*> outs;
        for (size_t i = 0; i < rows.size(); ++i) {
          views.push_back({ws[i].bytes.data(), dt, rows[i], cols});
          outs.push_back(ys[i].data());
        }
        MatMulGroup(x.data(), n, views.data(), outs.data(),
                    static_cast<int>(views.size()));
        for (size_t i = 0; i < rows.size(); ++i) {
          const std::vector<double> ref =
              RefMatMul(x, n, ws[i].values, rows[i], cols);
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t r = 0; r < rows[i]; ++r) {
              ASSERT_NEAR(ys[i][j * rows[i] + r], ref[j * rows[i] + r],
                          Tolerance(x, j, ws[i].values, r, cols))
                  << "matrix " << i << " j=" << j << " r=" << r;
            }
          }
        }
      }
    }
  }
}

TEST(KQuantEmbedTest, RowsEqualDequantized) {
  const int64_t vocab = 37;
  const std::vector<int32_t> tokens = {3, 0, 36, 3, -1, 37};
  for (DType dt : kTypes) {
    const int64_t dim = ColsFor(dt)[1];
    const StoredWeights q = Store(RandomVec(vocab * dim, 5), dt);
    std::vector<float> out(tokens.size() * dim, 1.0f);
    Embed(WeightView{q.bytes.data(), dt, vocab, dim}, tokens.data(),
          tokens.size(), out.data());
    for (size_t t = 0; t < tokens.size(); ++t) {
      const bool valid = tokens[t] >= 0 && tokens[t] < vocab;
      for (int64_t i = 0; i < dim; ++i) {
        const float want = valid ? q.values[tokens[t] * dim + i] : 0.0f;
        ASSERT_EQ(out[t * dim + i], want) << Name(dt) << " t=" << t;
      }
    }
  }
}

// The AVX2 dequantization of row tiles and panels is bit-identical to
// ConvertToF32 (panels zero past the last row).
TEST(KQuantMatMulTest, Avx2DequantEqualsConvert) {
  if (!internal::CpuHasAvx2FmaF16c()) GTEST_SKIP() << "no AVX2/FMA/F16C";
  for (DType dt : kTypes) {
    SCOPED_TRACE(Name(dt));
    const int64_t cols = ColsFor(dt)[1], rows = 21;
    const StoredWeights q = Store(RandomVec(rows * cols, 17, -2.0f, 1.0f), dt);
    std::vector<float> got((rows - 2) * cols);
    internal::DequantRowsAvx2(q.bytes.data(), dt, cols, 2, rows, got.data());
    for (int64_t i = 0; i < (rows - 2) * cols; ++i) {
      ASSERT_EQ(got[i], q.values[2 * cols + i]) << i;
    }
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{2, 9}, {1, 21}}) {
      const int64_t panels = (r1 - r0 + 15) / 16;
      std::vector<float> p(panels * 16 * cols + 8, -7.0f);
      // 32-byte aligned, as the panel kernels need.
      float* dst = p.data();
      while (reinterpret_cast<uintptr_t>(dst) % 32 != 0) ++dst;
      internal::DequantPanelsAvx2(q.bytes.data(), dt, cols, r0, r1, dst);
      for (int64_t r = 0; r < panels * 16; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float want = r0 + r < r1 ? q.values[(r0 + r) * cols + c] : 0.0f;
          ASSERT_EQ(dst[(r / 16) * 16 * cols + c * 16 + r % 16], want)
              << "row " << r << " col " << c;
        }
      }
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels
