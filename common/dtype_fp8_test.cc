// FP8 E4M3 conversions against the format's definition, by brute force.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"

namespace latentkv {
namespace {

// The value of a code from the OCP definition, in double.
double Definition(uint8_t code) {
  const int sign = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? m * std::ldexp(1.0, -9)
                            : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return sign ? -mag : mag;
}

// The code nearest to x among the finite codes (ties: the even code), with
// magnitudes beyond 448 saturating; found by trying every code.
uint8_t Nearest(float x) {
  if (x >= 448.0f) return 0x7e;
  if (x <= -448.0f) return 0xfe;
  int best = -1;
  double best_err = 0;
  for (int c = 0; c < 256; ++c) {
    const double v = Definition(static_cast<uint8_t>(c));
    if (std::isnan(v)) continue;
    if ((c & 0x80) != (std::signbit(x) ? 0x80 : 0)) continue;  // same sign
    const double err = std::abs(v - double{x});
    if (best < 0 || err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return static_cast<uint8_t>(best);
}

TEST(Fp8E4M3Test, DecodesEveryCodeAsDefined) {
  for (int c = 0; c < 256; ++c) {
    const double want = Definition(static_cast<uint8_t>(c));
    const float got = F8E4M3ToF32(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
    } else {
      EXPECT_EQ(double{got}, want) << c;
    }
  }
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
}

TEST(Fp8E4M3Test, EncodesToTheNearestCodeTiesToEven) {
  std::vector<float> xs;
  // Every code's value, the midpoints between neighbours (ties) and points
  // just beside them, both signs.
  for (int c = 0; c < 0x7e; ++c) {
    const double a = Definition(static_cast<uint8_t>(c));
    const double b = Definition(static_cast<uint8_t>(c + 1));
    const double mid = (a + b) / 2;
    for (double v :
         {a, mid, std::nextafter(mid, 0.0), std::nextafter(mid, 1e9)}) {
      xs.push_back(static_cast<float>(v));
      xs.push_back(-static_cast<float>(v));
    }
  }
  // Random magnitudes over every binade, and the saturating range.
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> exp(-14.0, 10.0);
  for (int i = 0; i < 20000; ++i) {
    const float v = static_cast<float>(std::exp2(exp(rng)));
    xs.push_back(i % 2 ? v : -v);
  }
  for (float v : {448.0f, 449.0f, 463.9f, 464.0f, 1e30f, 0.0f, -0.0f,
                  std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::denorm_min()}) {
    xs.push_back(v);
    xs.push_back(-v);
  }
  for (float x : xs) {
    ASSERT_EQ(F32ToF8E4M3(x), Nearest(x)) << x;
  }
}

TEST(Fp8E4M3Test, NanStaysNanAndNamesParse) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(F32ToF8E4M3(nan))));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(F32ToF8E4M3(-nan))));
  EXPECT_EQ(ParseDType("fp8_e4m3"), DType::kF8E4M3);
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "fp8_e4m3");
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1);
  std::vector<float> in = {0.5f, -3.0f, 1000.0f}, out(3);
  std::vector<uint8_t> codes(3);
  ConvertFromF32(in.data(), 3, DType::kF8E4M3, codes.data());
  ConvertToF32(codes.data(), DType::kF8E4M3, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.5f, -3.0f, 448.0f}));
}

}  // namespace
}  // namespace latentkv
