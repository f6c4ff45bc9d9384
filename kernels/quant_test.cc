// Tests of the block-quantized dtypes (common/dtype.h: q8_0, q4_0, q4_1) and
// of the kernels that read them (MatMul, MatMulGroup, Embed) against float64
// references over the dequantized weights.
#include "kernels/cpu/quant.h"

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cpu/internal.h"
#include "kernels/ops.h"
#include "kernels/reference_for_tests.h"

namespace latentkv::kernels {
namespace {

constexpr DType kQuantTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1};

using ::latentkv::kernels::testing::RandomVec;
using ::latentkv::kernels::testing::Store;
using ::latentkv::kernels::testing::StoredWeights;

void PutF16(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = F32ToF16(v);
  std::memcpy(b.data() + at, &h, 2);
}

TEST(QuantDTypeTest, SizesAndNames) {
  EXPECT_EQ(static_cast<int>(DType::kQ8_0), 3);
  EXPECT_EQ(static_cast<int>(DType::kQ4_0), 4);
  EXPECT_EQ(static_cast<int>(DType::kQ4_1), 5);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ8_0), 34);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_0), 18);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_1), 20);
  EXPECT_EQ(DTypeRowBytes(DType::kQ4_1, 576), 18 * 20);
  EXPECT_EQ(DTypeRowBytes(DType::kF32, 7), 28);
  EXPECT_EQ(DTypeRowBytes(DType::kBF16, 7), 14);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    EXPECT_FALSE(IsBlockQuantized(dt));
    EXPECT_EQ(DTypeBlockElems(dt), 1);
    EXPECT_EQ(DTypeBlockBytes(dt), DTypeSize(dt));
  }
  for (DType dt : kQuantTypes) {
    EXPECT_TRUE(IsBlockQuantized(dt));
    EXPECT_EQ(DTypeBlockElems(dt), 32);
    EXPECT_EQ(ParseDType(DTypeName(dt)), dt);
    EXPECT_FALSE(PrefersPanels(dt));
  }
  EXPECT_EQ(DTypeName(DType::kQ4_1), "q4_1");
  EXPECT_EQ(ParseDType("q3_0"), std::nullopt);
}

TEST(QuantDTypeDeathTest, NoElementSizeOrPartialBlocks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(DTypeSize(DType::kQ8_0), "DTypeRowBytes");
  EXPECT_DEATH(DTypeRowBytes(DType::kQ4_0, 48), "multiple of the block");
  std::vector<float> x(48);
  std::vector<uint8_t> b(64);
  EXPECT_DEATH(ConvertFromF32(x.data(), 48, DType::kQ4_1, b.data()),
               "whole blocks");
  std::vector<float> y(1);
  EXPECT_DEATH(
      MatMul(x.data(), 1, WeightView{b.data(), DType::kQ8_0, 1, 48}, y.data()),
      "whole blocks");
}

// Hand-built blocks (bytes from the format description) decode to the
// values the formats define, through every reader: ConvertToF32, Embed, and
// MatMul with unit vectors (each kernel path: n = 1, rows kernel, sgemm, and
// the portable loop).
struct KnownBlock {
  DType dtype;
  std::vector<uint8_t> bytes;
  std::vector<float> want;
};

std::vector<KnownBlock> KnownBlocks() {
  std::vector<KnownBlock> out;
  {  // q8_0: d = 0.5, q[j] = j - 16 except a few extremes.
    KnownBlock k{DType::kQ8_0, std::vector<uint8_t>(34),
                 std::vector<float>(32)};
    PutF16(k.bytes, 0, 0.5f);
    for (int j = 0; j < 32; ++j) {
      int q = j - 16;
      if (j == 1) q = -3;
      if (j == 2) q = 127;
      if (j == 3) q = -128;
      k.bytes[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
      k.want[j] = 0.5f * q;
    }
    EXPECT_EQ(k.want[1], -1.5f);
    out.push_back(k);
  }
  {  // q4_0: d = 0.5; byte j holds element j (low) and j + 16 (high).
    KnownBlock k{DType::kQ4_0, std::vector<uint8_t>(18),
                 std::vector<float>(32)};
    PutF16(k.bytes, 0, 0.5f);
    for (int j = 0; j < 16; ++j) {
      const int lo = j, hi = (j * 7 + 3) & 15;
      k.bytes[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
      k.want[j] = (lo - 8) * 0.5f;
      k.want[j + 16] = (hi - 8) * 0.5f;
    }
    EXPECT_EQ(k.want[0], -4.0f);
    EXPECT_EQ(k.want[16], -2.5f);  // hi nibble 3
    out.push_back(k);
  }
  {  // q4_1: d = 0.25, m = -1.
    KnownBlock k{DType::kQ4_1, std::vector<uint8_t>(20),
                 std::vector<float>(32)};
    PutF16(k.bytes, 0, 0.25f);
    PutF16(k.bytes, 2, -1.0f);
    for (int j = 0; j < 16; ++j) {
      const int lo = 15 - j, hi = (j * 5 + 1) & 15;
      k.bytes[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
      k.want[j] = lo * 0.25f - 1.0f;
      k.want[j + 16] = hi * 0.25f - 1.0f;
    }
    EXPECT_EQ(k.want[0], 2.75f);
    EXPECT_EQ(k.want[16], -0.75f);  // hi nibble 1
    out.push_back(k);
  }
  return out;
}

TEST(QuantDTypeTest, KnownBlocksDecode) {
  for (const KnownBlock& k : KnownBlocks()) {
    SCOPED_TRACE(DTypeName(k.dtype));
    std::vector<float> got(32);
    ConvertToF32(k.bytes.data(), k.dtype, 32, got.data());
    for (int j = 0; j < 32; ++j) EXPECT_EQ(got[j], k.want[j]) << j;
    // Two rows (the block twice): Embed of row 1.
    std::vector<uint8_t> table = k.bytes;
    table.insert(table.end(), k.bytes.begin(), k.bytes.end());
    const int32_t tok = 1;
    Embed(WeightView{table.data(), k.dtype, 2, 32}, &tok, 1, got.data());
    for (int j = 0; j < 32; ++j) EXPECT_EQ(got[j], k.want[j]) << j;
    // MatMul with x = unit vectors e_0 .. e_31 (n = 1 separately, then all
    // 32 at once for the tile paths) reads back every weight exactly.
    std::vector<float> eye(32 * 32, 0.0f);
    for (int j = 0; j < 32; ++j) eye[j * 32 + j] = 1.0f;
    const WeightView w{k.bytes.data(), k.dtype, 1, 32};
    for (int j = 0; j < 32; ++j) {
      float y = -1.0f;
      MatMul(eye.data() + j * 32, 1, w, &y);
      EXPECT_EQ(y, k.want[j]) << "n=1 element " << j;
    }
    for (int64_t n : {int64_t{5}, int64_t{32}}) {
      std::vector<float> y(n);
      MatMul(eye.data(), n, w, y.data());
      for (int j = 0; j < n; ++j) EXPECT_EQ(y[j], k.want[j]) << n << " " << j;
      internal::MatMulQuantPortable(eye.data(), n, k.bytes.data(), k.dtype, 1,
                                    32, y.data());
      for (int j = 0; j < n; ++j) EXPECT_EQ(y[j], k.want[j]) << "portable";
    }
  }
}

// ggml's reference rounding on hand-picked values.
TEST(QuantDTypeTest, QuantizeRounding) {
  std::vector<float> x(32, 0.0f), y(32);
  {  // q8_0: amax 127 -> d = 1; round half away from zero.
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.4f, x[4] = -126.6f;
    std::vector<uint8_t> b(34);
    ConvertFromF32(x.data(), 32, DType::kQ8_0, b.data());
    EXPECT_EQ(static_cast<int8_t>(b[2 + 1]), 3);
    EXPECT_EQ(static_cast<int8_t>(b[2 + 2]), -3);
    ConvertToF32(b.data(), DType::kQ8_0, 32, y.data());
    EXPECT_EQ(y[0], 127.0f);
    EXPECT_EQ(y[3], 0.0f);
    EXPECT_EQ(y[4], -127.0f);
  }
  {  // q4_0: the largest magnitude -8 gives d = 1: q = min(15, x + 8.5).
    std::fill(x.begin(), x.end(), 0.0f);
    x[0] = -8.0f, x[1] = 7.4f, x[2] = 3.6f, x[3] = -0.5f, x[17] = 2.4f;
    std::vector<uint8_t> b(18);
    ConvertFromF32(x.data(), 32, DType::kQ4_0, b.data());
    EXPECT_EQ(F16ToF32(b[0] | (b[1] << 8)), 1.0f);
    EXPECT_EQ(b[2 + 1] & 15, 15);  // trunc(15.9)
    EXPECT_EQ(b[2 + 2] & 15, 12);  // trunc(12.1)
    EXPECT_EQ(b[2 + 3] & 15, 8);   // trunc(8.0)
    EXPECT_EQ(b[2 + 1] >> 4, 10);  // x[17]: trunc(10.9)
    ConvertToF32(b.data(), DType::kQ4_0, 32, y.data());
    EXPECT_EQ(y[0], -8.0f);
    EXPECT_EQ(y[1], 7.0f);
    EXPECT_EQ(y[17], 2.0f);
    // Positive largest magnitude: d = -1.
    std::fill(x.begin(), x.end(), 0.0f);
    x[5] = 8.0f, x[6] = -3.2f;
    ConvertFromF32(x.data(), 32, DType::kQ4_0, b.data());
    EXPECT_EQ(F16ToF32(b[0] | (b[1] << 8)), -1.0f);
    ConvertToF32(b.data(), DType::kQ4_0, 32, y.data());
    EXPECT_EQ(y[5], 8.0f);
    EXPECT_EQ(y[6], -3.0f);  // trunc(-3.2 * -1 + 8.5) = 11 -> -3
  }
  {  // q4_1: min -1, max 14 -> d = 1, m = -1; q = trunc(x + 1 + 0.5).
    std::fill(x.begin(), x.end(), 0.0f);
    x[0] = -1.0f, x[1] = 14.0f, x[2] = 0.4f, x[3] = 0.6f, x[20] = 5.49f;
    std::vector<uint8_t> b(20);
    ConvertFromF32(x.data(), 32, DType::kQ4_1, b.data());
    ConvertToF32(b.data(), DType::kQ4_1, 32, y.data());
    EXPECT_EQ(y[0], -1.0f);
    EXPECT_EQ(y[1], 14.0f);
    EXPECT_EQ(y[2], 0.0f);
    EXPECT_EQ(y[3], 1.0f);
    EXPECT_EQ(y[20], 5.0f);
  }
  // All-zero blocks: d = 0, every element decodes to 0.
  std::fill(x.begin(), x.end(), 0.0f);
  for (DType dt : kQuantTypes) {
    std::vector<uint8_t> b(DTypeBlockBytes(dt), 0xAB);
    ConvertFromF32(x.data(), 32, dt, b.data());
    ConvertToF32(b.data(), dt, 32, y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f) << DTypeName(dt);
  }
}

// |x - dequant(quant(x))| <= d / 2 per element (plus the f16 rounding of d
// and m), q4_0 up to d where its asymmetric range clips (x / d > 7.5).
TEST(QuantDTypeTest, RoundTripBounds) {
  for (DType dt : kQuantTypes) {
    SCOPED_TRACE(DTypeName(dt));
    for (uint32_t seed = 0; seed < 40; ++seed) {
      // Blocks of varied scale and offset.
      const float scale = std::ldexp(1.0f, static_cast<int>(seed % 13) - 6);
      const float offset = (seed % 3 == 0) ? 3.0f * scale : 0.0f;
      std::vector<float> x =
          RandomVec(32 * 8, seed, offset - scale, offset + scale);
      const StoredWeights q = Store(x, dt);
      for (int64_t b = 0; b < 8; ++b) {
        float lo = x[b * 32], hi = lo, amax = 0.0f;
        for (int j = 0; j < 32; ++j) {
          lo = std::min(lo, x[b * 32 + j]);
          hi = std::max(hi, x[b * 32 + j]);
          amax = std::max(amax, std::fabs(x[b * 32 + j]));
        }
        const float d = dt == DType::kQ8_0   ? amax / 127.0f
                        : dt == DType::kQ4_0 ? amax / 8.0f
                                             : (hi - lo) / 15.0f;
        const double slack = std::ldexp(amax, -10) + 1e-7;
        for (int j = 0; j < 32; ++j) {
          const int64_t i = b * 32 + j;
          double bound = 0.5 * d + slack;
          if (dt == DType::kQ4_0) {
            // Scaled value in [-8, 8]; above 7.5 (the side opposite the
            // largest magnitude) it clips to 7.
            const float dd =
                F16ToF32(q.bytes[b * 18] | (q.bytes[b * 18 + 1] << 8));
            if (dd != 0.0f && x[i] / dd > 7.5f) bound = d + slack;
          }
          ASSERT_LE(std::fabs(x[i] - q.values[i]), bound)
              << "seed " << seed << " at " << i;
        }
      }
    }
  }
}

using ::latentkv::kernels::testing::RefMatMul;

// f32 rounding tolerance of y[j, r]: a few units of 2^-24 relative to
// sum_c |x[j, c]| * A(r, c), A the largest magnitude in W's block holding
// (r, c) (the kernels scale per block: q * d, plus m * sum(x)).
double Tolerance(const std::vector<float>& x, int64_t j,
                 const std::vector<float>& w, int64_t r, int64_t cols) {
  double s = 0.0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    double a = 0.0, xs = 0.0;
    for (int k = 0; k < 32; ++k) {
      a = std::max(a, std::fabs(static_cast<double>(w[r * cols + b * 32 + k])));
      xs += std::fabs(static_cast<double>(x[j * cols + b * 32 + k]));
    }
    s += a * xs;
  }
  return 1e-6 * s + 1e-6;
}

struct Shape {
  int64_t n, rows, cols;
};

std::vector<Shape> Shapes() {
  std::vector<Shape> shapes;
  for (int64_t n : {1, 2, 5, 16, 17, 64, 130}) {
    for (int64_t rows : {1, 17, 33}) {
      for (int64_t cols : {32, 64, 576, 1536})
        shapes.push_back({n, rows, cols});
    }
  }
  // Multi-threaded (n * rows * cols >= 2^18) with thread ranges off the
  // streams' and tiles' multiples.
  shapes.push_back({1, 3001, 576});
  shapes.push_back({1, 1000, 1536});
  shapes.push_back({3, 517, 768});
  shapes.push_back({16, 203, 1536});
  shapes.push_back({64, 517, 576});
  return shapes;
}

using QuantRun = void (*)(const float* x, int64_t n, const uint8_t* w, DType dt,
                          int64_t rows, int64_t cols, float* y);

void CheckQuantMatMul(DType dt, QuantRun run) {
  for (const Shape& s : Shapes()) {
    SCOPED_TRACE(std::string(DTypeName(dt)) + " n=" + std::to_string(s.n) +
                 " rows=" + std::to_string(s.rows) +
                 " cols=" + std::to_string(s.cols));
    const std::vector<float> x = RandomVec(s.n * s.cols, 1 + s.cols + s.n);
    // Offset weights so q4_1's m and q4_0's -8d matter.
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

TEST(QuantMatMulTest, MatMulMatchesReference) {
  for (DType dt : kQuantTypes) {
    CheckQuantMatMul(dt, [](const float* x, int64_t n, const uint8_t* w,
                            DType dt, int64_t rows, int64_t cols, float* y) {
      MatMul(x, n, WeightView{w, dt, rows, cols}, y);
    });
  }
}

TEST(QuantMatMulTest, PortablePath) {
  for (DType dt : kQuantTypes) {
    CheckQuantMatMul(dt, internal::MatMulQuantPortable);
  }
}

// A row's sum does not depend on how the rows are split among threads (the
// streams and tiles accumulate each row alike): the multi-threaded products
// equal the one-thread ones bit for bit up to the rows kernel's n.
TEST(QuantMatMulTest, ThreadSplitsDoNotChangeResults) {
  if (omp_get_max_threads() < 2) GTEST_SKIP() << "one thread";
  for (DType dt : kQuantTypes) {
    for (const Shape& s : {Shape{1, 3001, 576}, Shape{1, 1000, 1536},
                           Shape{5, 517, 768}, Shape{16, 203, 1536}}) {
      SCOPED_TRACE(std::string(DTypeName(dt)) + " n=" + std::to_string(s.n));
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

// One input (the fused 4-bit kernels decode nibbles through float bit
// patterns and fold the offsets into precomputed sums of x): raw blocks of
// every nibble value, all-0 and all-15 blocks, scales of both signs from
// f16 subnormals to 2^10 and q4_1 offsets of both signs, on rows that fill
// the streams and a tail, against the reference over ConvertToF32.
TEST(QuantMatMulTest, OneInputRawBlocks) {
  const int64_t rows = 11, cols = 160;
  const float scales[] = {1.0f, -0.37f, 3e-6f, -1024.0f, 0.0f, 0.021f};
  std::mt19937 rng(23);
  for (DType dt : {DType::kQ4_0, DType::kQ4_1}) {
    SCOPED_TRACE(DTypeName(dt));
    const int64_t bb = DTypeBlockBytes(dt), blocks = rows * cols / 32;
    std::vector<uint8_t> w(blocks * bb);
    for (int64_t b = 0; b < blocks; ++b) {
      const size_t at = b * bb;
      PutF16(w, at, scales[(b + b / 7) % 6]);
      if (dt == DType::kQ4_1) PutF16(w, at + 2, scales[(b + 3) % 6] * 5.0f);
      const int64_t qs = at + (dt == DType::kQ4_0 ? 2 : 4);
      for (int j = 0; j < 16; ++j) {
        w[qs + j] = b % 5 == 1   ? 0x00
                    : b % 5 == 3 ? 0xFF
                                 : static_cast<uint8_t>(rng());
      }
    }
    std::vector<float> values(rows * cols);
    ConvertToF32(w.data(), dt, rows * cols, values.data());
    const std::vector<float> x = RandomVec(cols, 29, -2.0f, 1.5f);
    const std::vector<double> ref = RefMatMul(x, 1, values, rows, cols);
    std::vector<float> y(rows, 12345.0f);
    MatMul(x.data(), 1, WeightView{w.data(), dt, rows, cols}, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_NEAR(y[r], ref[r], Tolerance(x, 0, values, r, cols)) << r;
    }
  }
}

// Q/K/V- and gate/up-like groups (different rows, same cols) through
// MatMulGroup, against the reference per matrix.
TEST(QuantMatMulTest, GroupMatchesReference) {
  struct Case {
    int64_t cols;
    std::vector<int64_t> rows;
  };
  const Case cases[] = {
      {576, {576, 192, 192}}, {576, {1536, 1536}}, {64, {17, 1, 33}}};
  for (DType dt : kQuantTypes) {
    for (const Case& c : cases) {
      for (int64_t n : {1, 2, 16, 64}) {
        SCOPED_TRACE(std::string(DTypeName(dt)) + " n=" + std::to_string(n) +
                     " cols=" + std::to_string(c.cols));
        const std::vector<float> x = RandomVec(n * c.cols, 3 + n);
        std::vector<StoredWeights> ws;
        std::vector<WeightView> views;
        std::vector<std::vector<float>> ys;
        for (size_t i = 0; i < c.rows.size(); ++i) {
          ws.push_back(
              Store(RandomVec(c.rows[i] * c.cols, 11 + i, -1.2f, 0.8f), dt));
          ys.emplace_back(n * c.rows[i], 12345.0f);
        }
        for (size_t i = 0; i < c.rows.size(); ++i) {
          views.push_back({ws[i].bytes.data(), dt, c.rows[i], c.cols});
        }
        std::vector<float*> outs;
        for (auto& y : ys) outs.push_back(y.data());
        MatMulGroup(x.data(), n, views.data(), outs.data(),
                    static_cast<int>(views.size()));
        for (size_t i = 0; i < c.rows.size(); ++i) {
          const std::vector<double> ref =
              RefMatMul(x, n, ws[i].values, c.rows[i], c.cols);
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t r = 0; r < c.rows[i]; ++r) {
              ASSERT_NEAR(ys[i][j * c.rows[i] + r], ref[j * c.rows[i] + r],
                          Tolerance(x, j, ws[i].values, r, c.cols))
                  << "matrix " << i << " j=" << j << " r=" << r;
            }
          }
        }
      }
    }
  }
}

TEST(QuantEmbedTest, RowsEqualDequantized) {
  const int64_t vocab = 37, dim = 576;
  const std::vector<float> table = RandomVec(vocab * dim, 5);
  const std::vector<int32_t> tokens = {3, 0, 36, 3, -1, 37};
  for (DType dt : kQuantTypes) {
    const StoredWeights q = Store(table, dt);
    std::vector<float> out(tokens.size() * dim, 1.0f);
    Embed(WeightView{q.bytes.data(), dt, vocab, dim}, tokens.data(),
          tokens.size(), out.data());
    for (size_t t = 0; t < tokens.size(); ++t) {
      const bool valid = tokens[t] >= 0 && tokens[t] < vocab;
      for (int64_t i = 0; i < dim; ++i) {
        const float want = valid ? q.values[tokens[t] * dim + i] : 0.0f;
        ASSERT_EQ(out[t * dim + i], want) << DTypeName(dt) << " t=" << t;
      }
    }
  }
}

// The AVX2 dequantization of tiles is bit-identical to ConvertToF32.
TEST(QuantMatMulTest, Avx2DequantEqualsConvert) {
  if (!internal::CpuHasAvx2FmaF16c()) GTEST_SKIP() << "no AVX2/FMA/F16C";
  const int64_t rows = 9, cols = 96;
  for (DType dt : kQuantTypes) {
    const StoredWeights q = Store(RandomVec(rows * cols, 17, -2.0f, 1.0f), dt);
    std::vector<float> got((rows - 2) * cols);
    internal::DequantRowsAvx2(q.bytes.data(), dt, cols, 2, rows, got.data());
    for (int64_t i = 0; i < (rows - 2) * cols; ++i) {
      ASSERT_EQ(got[i], q.values[2 * cols + i]) << DTypeName(dt) << " " << i;
    }
    // Panels of rows 2..8 and 1..20 (one partial panel; one full and one
    // partial): column c's 16 values contiguous, zero past the last row.
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{2, 9}, {1, 21}}) {
      const StoredWeights big =
          Store(RandomVec(21 * cols, 19, -1.0f, 2.0f), dt);
      const int64_t panels = (r1 - r0 + 15) / 16;
      std::vector<float> p(panels * 16 * cols, -7.0f);
      internal::DequantPanelsAvx2(big.bytes.data(), dt, cols, r0, r1, p.data());
      for (int64_t r = 0; r < panels * 16; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float want =
              r0 + r < r1 ? big.values[(r0 + r) * cols + c] : 0.0f;
          ASSERT_EQ(p[(r / 16) * 16 * cols + c * 16 + r % 16], want)
              << DTypeName(dt) << " row " << r << " col " << c;
        }
      }
    }
  }
}

}  // namespace
}  // namespace latentkv::kernels
