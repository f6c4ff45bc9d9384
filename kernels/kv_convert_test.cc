// The vectorized KV conversions equal the scalar definitions on every code.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cpu/internal.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

bool SameFloat(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, 4) == 0;
}

TEST(KvConvertTest, Fp8Avx2EqualsTheTableOnEveryCodeAndScale) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  // Every code, in an order that puts each in every lane and in the tail.
  std::vector<uint8_t> codes;
  for (int r = 0; r < 9; ++r) {
    for (int c = 0; c < 256; ++c) codes.push_back(static_cast<uint8_t>(c + r));
  }
  for (float scale : {1.0f, 0.011f, 3.7e-5f, 250.0f}) {
    std::vector<float> got(codes.size());
    internal::F8E4M3ToF32Avx2(codes.data(), static_cast<int64_t>(codes.size()),
                              scale, got.data());
    for (size_t i = 0; i < codes.size(); ++i) {
      ASSERT_TRUE(SameFloat(got[i], F8E4M3ToF32(codes[i]) * scale))
          << "code " << int{codes[i]} << " scale " << scale << ": " << got[i];
    }
  }
}

TEST(KvConvertTest, F16F16cEqualsTheScalarConversion) {
  if (!internal::CpuHasF16c()) GTEST_SKIP() << "no F16C on this CPU";
  std::vector<uint16_t> h(65536 + 5);
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint16_t>(i);
  std::vector<float> got(h.size());
  internal::F16ToF32F16c(h.data(), static_cast<int64_t>(h.size()), got.data());
  for (size_t i = 0; i < h.size(); ++i) {
    ASSERT_TRUE(SameFloat(got[i], F16ToF32(h[i]))) << i;
  }
}

}  // namespace
}  // namespace latentkv::kernels
