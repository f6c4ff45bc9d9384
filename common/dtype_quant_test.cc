// The q5 and k-quant dtypes (common/dtype.h): sizes and names, the scale
// packing helpers, hand-built blocks, and the quantizers' error on Gaussian
// data against a simple bound. (Their dequantization is also checked bit for
// bit against gguf-py in model/gguf/ggml_quants_test.cc; the kernels that
// read them in kernels/kquant_test.cc.)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/quant_blocks.h"
#include "gtest/gtest.h"

namespace latentkv {
namespace {

constexpr DType kNewTypes[] = {DType::kQ5_0, DType::kQ5_1, DType::kQ2_K,
                               DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                               DType::kQ6_K};

TEST(QuantDTypeNewTest, SizesAndNames) {
  struct Want {
    DType t;
    const char* name;
    int elems, bytes;
  };
  const Want want[] = {
      {DType::kQ5_0, "q5_0", 32, 22},   {DType::kQ5_1, "q5_1", 32, 24},
      {DType::kQ2_K, "q2_K", 256, 84},  {DType::kQ3_K, "q3_K", 256, 110},
      {DType::kQ4_K, "q4_K", 256, 144}, {DType::kQ5_K, "q5_K", 256, 176},
      {DType::kQ6_K, "q6_K", 256, 210}};
  for (const Want& w : want) {
    SCOPED_TRACE(w.name);
    EXPECT_EQ(DTypeName(w.t), w.name);
    EXPECT_EQ(ParseDType(w.name), w.t);
    EXPECT_TRUE(IsBlockQuantized(w.t));
    EXPECT_EQ(IsKQuant(w.t), w.elems == 256);
    EXPECT_FALSE(IsKvDType(w.t));
    EXPECT_EQ(DTypeBlockElems(w.t), w.elems);
    EXPECT_EQ(DTypeBlockBytes(w.t), w.bytes);
    EXPECT_EQ(DTypeRowBytes(w.t, 2048), 2048 / w.elems * w.bytes);
  }
  EXPECT_EQ(ParseDType("q4_k"), DType::kQ4_K);
  EXPECT_EQ(ParseDType("q6_k"), DType::kQ6_K);
  EXPECT_EQ(ParseDType("q5_k_m"), std::nullopt);
  EXPECT_EQ(ParseDType("Q4_K"), std::nullopt);
  EXPECT_FALSE(IsKQuant(DType::kQ8_0));
}

TEST(QuantDTypeNewDeathTest, PartialSuperBlocks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(DTypeRowBytes(DType::kQ4_K, 640), "multiple of the block");
  std::vector<float> x(640);
  std::vector<uint8_t> b(1024);
  EXPECT_DEATH(ConvertFromF32(x.data(), 640, DType::kQ6_K, b.data()),
               "whole blocks");
  EXPECT_DEATH(ConvertToF32(b.data(), DType::kQ2_K, 640, x.data()),
               "whole blocks");
}

TEST(QuantScalePackingTest, RoundTripsEveryValue) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    uint8_t sc[8], mn[8], packed[12];
    for (int j = 0; j < 8; ++j) {
      sc[j] = trial < 64 ? trial : rng() % 64;
      mn[j] = trial < 64 ? 63 - trial : rng() % 64;
    }
    quant::PackScaleMinK4(sc, mn, packed);
    for (int j = 0; j < 8; ++j) {
      int s, m;
      quant::UnpackScaleMinK4(packed, j, &s, &m);
      ASSERT_EQ(s, sc[j]) << trial << " " << j;
      ASSERT_EQ(m, mn[j]) << trial << " " << j;
    }
    uint8_t s16[16], out[16];
    for (int j = 0; j < 16; ++j) s16[j] = trial < 64 ? trial : rng() % 64;
    quant::PackScalesQ3K(s16, packed);
    quant::UnpackScalesQ3K(packed, out);
    for (int j = 0; j < 16; ++j) ASSERT_EQ(out[j], s16[j]) << trial << " " << j;
  }
}

void PutF16(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = F32ToF16(v);
  std::memcpy(b.data() + at, &h, 2);
}

// Blocks built from the layout text of common/dtype.h, element by element:
// every level of every element decodes to its formula's value.
TEST(QuantDTypeNewTest, HandBuiltBlocksDecode) {
  std::mt19937 rng(11);
  {  // q5_0 / q5_1: element j's 5-bit level q[j] = (7 j + 3) % 32.
    for (DType t : {DType::kQ5_0, DType::kQ5_1}) {
      const bool one = t == DType::kQ5_1;
      std::vector<uint8_t> b(DTypeBlockBytes(t), 0);
      PutF16(b, 0, 0.25f);
      if (one) PutF16(b, 2, -1.5f);
      uint8_t* qh = b.data() + (one ? 4 : 2);
      uint8_t* qs = b.data() + (one ? 8 : 6);
      std::vector<float> want(32);
      for (int j = 0; j < 32; ++j) {
        const int q = (7 * j + 3) % 32;
        qs[j % 16] |= static_cast<uint8_t>((q & 15) << (j < 16 ? 0 : 4));
        qh[j / 8] |= static_cast<uint8_t>((q >> 4) << (j % 8));
        want[j] = one ? 0.25f * q - 1.5f : 0.25f * (q - 16);
      }
      std::vector<float> got(32);
      ConvertToF32(b.data(), t, 32, got.data());
      for (int j = 0; j < 32; ++j) EXPECT_EQ(got[j], want[j]) << j;
    }
  }
  {  // q6_K: levels random, scales -128..127 spread.
    std::vector<uint8_t> b(210, 0);
    PutF16(b, 208, 0.5f);
    std::vector<float> want(256);
    for (int s = 0; s < 16; ++s) {
      b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(s * 17 - 128));
    }
    for (int e = 0; e < 256; ++e) {
      const int q = static_cast<int>(rng() % 64);
      const int h = e / 128, t = (e % 128) / 32, l = e % 32;
      b[64 * h + 32 * (t % 2) + l] |=
          static_cast<uint8_t>((q & 15) << (t >= 2 ? 4 : 0));
      b[128 + 32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * t));
      want[e] = 0.5f * (e / 16 * 17 - 128) * (q - 32);
    }
    std::vector<float> got(256);
    ConvertToF32(b.data(), DType::kQ6_K, 256, got.data());
    for (int e = 0; e < 256; ++e) EXPECT_EQ(got[e], want[e]) << e;
  }
  {  // q4_K / q5_K: sub-block s scale 2s + 1, min 63 - 5s.
    for (DType t : {DType::kQ4_K, DType::kQ5_K}) {
      const bool five = t == DType::kQ5_K;
      std::vector<uint8_t> b(DTypeBlockBytes(t), 0);
      PutF16(b, 0, 0.125f);
      PutF16(b, 2, 0.0625f);
      uint8_t sc[8], mn[8];
      for (int s = 0; s < 8; ++s) {
        sc[s] = static_cast<uint8_t>(2 * s + 1);
        mn[s] = static_cast<uint8_t>(63 - 5 * s);
      }
      quant::PackScaleMinK4(sc, mn, b.data() + 4);
      uint8_t* qs = b.data() + (five ? 48 : 16);
      std::vector<float> want(256);
      for (int e = 0; e < 256; ++e) {
        const int q = static_cast<int>(rng() % (five ? 32 : 16));
        const int s = e / 32, l = e % 32;
        qs[32 * (s / 2) + l] |=
            static_cast<uint8_t>((q & 15) << (s % 2 == 0 ? 0 : 4));
        if (five) b[16 + l] |= static_cast<uint8_t>((q >> 4) << s);
        want[e] = 0.125f * sc[s] * q - 0.0625f * mn[s];
      }
      std::vector<float> got(256);
      ConvertToF32(b.data(), t, 256, got.data());
      for (int e = 0; e < 256; ++e) EXPECT_EQ(got[e], want[e]) << e;
    }
  }
  {  // q2_K and q3_K.
    std::vector<uint8_t> b2(84, 0), b3(110, 0);
    PutF16(b2, 80, 0.5f);
    PutF16(b2, 82, 0.25f);
    PutF16(b3, 108, 0.25f);
    uint8_t s3[16];
    for (int s = 0; s < 16; ++s) {
      b2[s] = static_cast<uint8_t>((s % 16) | ((15 - s) << 4));
      s3[s] = static_cast<uint8_t>(s * 4 + 1);  // scale s * 4 - 31
    }
    quant::PackScalesQ3K(s3, b3.data() + 96);
    std::vector<float> want2(256), want3(256);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, t = (e % 128) / 32, l = e % 32, s = e / 16;
      const int q2 = static_cast<int>(rng() % 4);
      b2[16 + 32 * h + l] |= static_cast<uint8_t>(q2 << (2 * t));
      want2[e] = 0.5f * s * q2 - 0.25f * (15 - s);
      const int q3 = static_cast<int>(rng() % 8) - 4;  // -4..3
      b3[32 + 32 * h + l] |= static_cast<uint8_t>(((q3 + 4) & 3) << (2 * t));
      if (q3 >= 0) b3[l] |= static_cast<uint8_t>(1 << (4 * h + t));
      want3[e] = 0.25f * (s * 4 - 31) * q3;
    }
    std::vector<float> got(256);
    ConvertToF32(b2.data(), DType::kQ2_K, 256, got.data());
    for (int e = 0; e < 256; ++e) EXPECT_EQ(got[e], want2[e]) << "q2_K " << e;
    ConvertToF32(b3.data(), DType::kQ3_K, 256, got.data());
    for (int e = 0; e < 256; ++e) EXPECT_EQ(got[e], want3[e]) << "q3_K " << e;
  }
}

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<float> RoundTrip(const std::vector<float>& x, DType t) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(DTypeRowBytes(t, n));
  ConvertFromF32(x.data(), n, t, q.data());
  std::vector<float> y(n);
  ConvertToF32(q.data(), t, n, y.data());
  return y;
}

// The simple bound: the RMS error of rounding each sub-block to the nearest
// of its levels spread evenly over the sub-block's range, with the scale
// kept in f32 (step^2 / 12 per element for a uniform residual): range
// max - min over `levels` steps (asymmetric types), or max |x| over `half`
// steps (symmetric ones).
double SimpleBoundRms(const std::vector<float>& x, DType t) {
  struct Sub {
    int elems;
    bool symmetric;
    double steps;
  };
  const Sub s = t == DType::kQ5_0   ? Sub{32, true, 16}
                : t == DType::kQ5_1 ? Sub{32, false, 31}
                : t == DType::kQ2_K ? Sub{16, false, 3}
                : t == DType::kQ3_K ? Sub{16, true, 4}
                : t == DType::kQ4_K ? Sub{32, false, 15}
                : t == DType::kQ5_K ? Sub{32, false, 31}
                                    : Sub{16, true, 32};
  double sum = 0;
  for (size_t b = 0; b < x.size(); b += s.elems) {
    double lo = x[b], hi = x[b], amax = 0;
    for (int i = 0; i < s.elems; ++i) {
      lo = std::min<double>(lo, x[b + i]);
      hi = std::max<double>(hi, x[b + i]);
      amax = std::max<double>(amax, std::fabs(x[b + i]));
    }
    const double step = s.symmetric ? amax / s.steps : (hi - lo) / s.steps;
    sum += s.elems * step * step / 12.0;
  }
  return std::sqrt(sum / x.size());
}

double Rms(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double{a[i]} - b[i];
    s += d * d;
  }
  return std::sqrt(s / a.size());
}

// RMS error of quantize + dequantize on N(0, 1) data. The k-quants (searched
// sub-block fits, then scales quantized to 4-8 bits) must beat the simple
// bound; q5_0 / q5_1 (ggml's reference rounding) must stay within 10% of it
// (q5_0 clips one level on the side opposite the largest magnitude).
TEST(QuantErrorTest, GaussianRmsAgainstSimpleBound) {
  const std::vector<float> x = Gaussian(256 * 256, 42);
  for (DType t : kNewTypes) {
    const std::vector<float> y = RoundTrip(x, t);
    const double rms = Rms(x, y), bound = SimpleBoundRms(x, t);
    std::printf("%-5s rms %.5f  simple bound %.5f  ratio %.3f\n",
                std::string(DTypeName(t)).c_str(), rms, bound, rms / bound);
    EXPECT_LE(rms, (IsKQuant(t) ? 1.0 : 1.1) * bound) << DTypeName(t);
    EXPECT_GT(rms, 0.0) << DTypeName(t);
  }
}

// Scale invariance of the fits (up to f16 rounding of the super-block
// scales): tiny, large and offset data quantize with proportional error,
// and all-zero and constant blocks exactly.
TEST(QuantErrorTest, ScalesAndSpecialBlocks) {
  for (DType t : kNewTypes) {
    SCOPED_TRACE(DTypeName(t));
    const std::vector<float> x = Gaussian(256 * 16, 7);
    const double base = Rms(x, RoundTrip(x, t));
    for (float scale : {1e-3f, 30.0f, 1000.0f}) {
      std::vector<float> xs(x);
      for (float& v : xs) v *= scale;
      EXPECT_NEAR(Rms(xs, RoundTrip(xs, t)) / scale, base, 0.05 * base)
          << scale;
    }
    const std::vector<float> zero(256, 0.0f);
    for (float v : RoundTrip(zero, t)) ASSERT_EQ(v, 0.0f);
    // A constant negative block: asymmetric types hold it as the min.
    const std::vector<float> c(256, -0.75f);
    for (float v : RoundTrip(c, t)) ASSERT_NEAR(v, -0.75f, 2e-3f);
  }
}

// Non-finite inputs give k-quant blocks whose stored scales are finite.
TEST(QuantErrorTest, NonFiniteInputsGiveFiniteKQuantBlocks) {
  for (DType t : kNewTypes) {
    if (!IsKQuant(t)) continue;
    SCOPED_TRACE(DTypeName(t));
    std::vector<float> x = Gaussian(512, 3);
    x[5] = std::numeric_limits<float>::infinity();
    x[40] = -std::numeric_limits<float>::infinity();
    x[300] = std::numeric_limits<float>::quiet_NaN();
    for (float v : RoundTrip(x, t)) ASSERT_TRUE(std::isfinite(v));
  }
}

// Quantizing what a block decodes to gives back values at least as close:
// the fits find the grid the values already lie on (or a better one).
TEST(QuantErrorTest, RequantizingIsStable) {
  for (DType t : kNewTypes) {
    SCOPED_TRACE(DTypeName(t));
    const std::vector<float> x = Gaussian(256 * 8, 9);
    const std::vector<float> y = RoundTrip(x, t);
    const std::vector<float> z = RoundTrip(y, t);
    EXPECT_LE(Rms(y, z), 0.5 * Rms(x, y));
  }
}

}  // namespace
}  // namespace latentkv
