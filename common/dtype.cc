#include "common/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/check.h"
#include "common/quant_blocks.h"

namespace latentkv {

bool IsBlockQuantized(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
    case DType::kF8E4M3:
      return false;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
  }
  return false;
}

bool IsKQuant(DType t) {
  return t == DType::kQ2_K || t == DType::kQ3_K || t == DType::kQ4_K ||
         t == DType::kQ5_K || t == DType::kQ6_K;
}

int DTypeBlockElems(DType t) {
  if (IsKQuant(t)) return kKQuantBlockElems;
  return IsBlockQuantized(t) ? kQuantBlockElems : 1;
}

int DTypeBlockBytes(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
    case DType::kQ8_0:
      return 34;
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_1:
      return 20;
    case DType::kQ5_0:
      return 22;
    case DType::kQ5_1:
      return 24;
    case DType::kQ2_K:
      return 84;
    case DType::kQ3_K:
      return 110;
    case DType::kQ4_K:
      return 144;
    case DType::kQ5_K:
      return 176;
    case DType::kQ6_K:
      return 210;
  }
  LATENTKV_CHECK(false, "unknown dtype ", static_cast<int>(t));
}

int64_t DTypeRowBytes(DType t, int64_t n) {
  const int elems = DTypeBlockElems(t);
  LATENTKV_CHECK(n % elems == 0, std::string(DTypeName(t)), " row of ", n,
                 " elements is not a multiple of the block size ", elems);
  return n / elems * DTypeBlockBytes(t);
}

int DTypeSize(DType t) {
  LATENTKV_CHECK(!IsBlockQuantized(t), "DTypeSize of block-quantized ",
                 std::string(DTypeName(t)), ": use DTypeRowBytes");
  return DTypeBlockBytes(t);
}

bool IsKvDType(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 ||
         t == DType::kF8E4M3;
}

int64_t KvRowBytes(DType dtype, int32_t d_qk, int32_t d_vo) {
  return int64_t{sizeof(int32_t)} +
         int64_t{DTypeSize(dtype)} * (int64_t{d_qk} + d_vo);
}

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kQ8_0:
      return "q8_0";
    case DType::kQ4_0:
      return "q4_0";
    case DType::kQ4_1:
      return "q4_1";
    case DType::kF8E4M3:
      return "fp8_e4m3";
    case DType::kQ5_0:
      return "q5_0";
    case DType::kQ5_1:
      return "q5_1";
    case DType::kQ2_K:
      return "q2_K";
    case DType::kQ3_K:
      return "q3_K";
    case DType::kQ4_K:
      return "q4_K";
    case DType::kQ5_K:
      return "q5_K";
    case DType::kQ6_K:
      return "q6_K";
  }
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "f32" || name == "float32") return DType::kF32;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "f16" || name == "float16") return DType::kF16;
  if (name == "q8_0") return DType::kQ8_0;
  if (name == "q4_0") return DType::kQ4_0;
  if (name == "q4_1") return DType::kQ4_1;
  if (name == "fp8_e4m3" || name == "fp8") return DType::kF8E4M3;
  if (name == "q5_0") return DType::kQ5_0;
  if (name == "q5_1") return DType::kQ5_1;
  if (name == "q2_K" || name == "q2_k") return DType::kQ2_K;
  if (name == "q3_K" || name == "q3_k") return DType::kQ3_K;
  if (name == "q4_K" || name == "q4_k") return DType::kQ4_K;
  if (name == "q5_K" || name == "q5_k") return DType::kQ5_K;
  if (name == "q6_K" || name == "q6_k") return DType::kQ6_K;
  return std::nullopt;
}

uint16_t F32ToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float Bf16ToF32(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#ifdef __FLT16_MAX__  // the compiler has _Float16 (gcc 12; clang >= 15)
uint16_t F32ToF16(float x) {
  return std::bit_cast<uint16_t>(static_cast<_Float16>(x));
}

float F16ToF32(uint16_t x) {
  return static_cast<float>(std::bit_cast<_Float16>(x));
}
#else  // clang 14 on x86-64 (the fuzz build): the same conversions in bits
uint16_t F32ToF16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  const int32_t e = static_cast<int32_t>(a >> 23);
  if (e - 112 >= 31) return sign | 0x7c00u;  // inf, or beyond 2^16
  // The magnitude in units of the result's last place: normal halves keep
  // 10 of the 23 mantissa bits, subnormal ones (e < 113) fewer.
  const uint32_t m = e == 0 ? (a & 0x7fffffu) : ((a & 0x7fffffu) | 0x800000u);
  const int32_t shift = e >= 113 ? 13 : 126 - std::max(e, 1);
  if (shift > 25) return sign;  // below half the smallest subnormal
  uint32_t bits = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (e >= 113) bits = (static_cast<uint32_t>(e - 112) << 10) | (bits & 0x3ffu);
  if (rem > halfway || (rem == halfway && (bits & 1u))) ++bits;  // to even
  return sign | static_cast<uint16_t>(std::min(bits, 0x7c00u));
}

float F16ToF32(uint16_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x8000u) << 16;
  const uint32_t e = (x >> 10) & 0x1fu, m = x & 0x3ffu;
  if (e == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  if (e == 0) {  // zero or subnormal: m * 2^-24
    const float f = static_cast<float>(m) * 0x1p-24f;
    return sign != 0 ? -f : f;
  }
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}
#endif

uint8_t F32ToF8E4M3(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7f;  // NaN
  // |x| >= 448 (and inf) saturates: the largest finite, S.1111.110.
  if (a >= 0x43e00000u) return sign | 0x7e;
  // Below 2^-6 the result is subnormal: multiples of 2^-9. Adding 2^14
  // (whose f32 spacing is 2^-9) to |x| rounds to nearest even at exactly
  // that spacing; the sum's low mantissa bits count the 2^-9 steps (8 when
  // |x| rounds up to 2^-6, the smallest normal's code).
  if (a < 0x3c800000u) {
    float f;
    std::memcpy(&f, &a, 4);
    const float t = f + 16384.0f;
    uint32_t tu;
    std::memcpy(&tu, &t, 4);
    return sign | static_cast<uint8_t>(tu - 0x46800000u);
  }
  // Normal: keep 3 of 23 mantissa bits, round to nearest even, rebias 127->7.
  const uint32_t rounded = a + 0x7ffffu + ((a >> 20) & 1u);
  const uint32_t code = (rounded >> 20) - ((127 - 7) << 3);
  // Rounding up from 448 < |x| < 464 was caught above; code <= 0x7e here.
  return sign | static_cast<uint8_t>(code);
}

float F8E4M3ToF32(uint8_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x80) << 24;
  const uint32_t e = (x >> 3) & 0xf, m = x & 7;
  float mag;
  if (e == 0xf && m == 7) {
    mag = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    mag = static_cast<float>(m) * 0.001953125f;  // m * 2^-9
  } else {
    const uint32_t bits = ((e + 127 - 7) << 23) | (m << 20);
    std::memcpy(&mag, &bits, 4);
  }
  uint32_t u;
  std::memcpy(&u, &mag, 4);
  u |= sign;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void ConvertToF32(const void* src, DType from, int64_t n, float* dst) {
  if (IsBlockQuantized(from)) {
    const int block = DTypeBlockElems(from);
    LATENTKV_CHECK(n % block == 0, "dequantizing ", n, " ",
                   std::string(DTypeName(from)), " elements: not whole blocks");
    quant::DequantizeBlocks(from, static_cast<const uint8_t*>(src), n / block,
                            dst);
    return;
  }
  switch (from) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(s[i]);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
    case DType::kF8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F8E4M3ToF32(s[i]);
      return;
    }
    default:
      return;  // dequantized above
  }
}

void ConvertFromF32(const float* src, int64_t n, DType to, void* dst) {
  if (IsBlockQuantized(to)) {
    const int block = DTypeBlockElems(to);
    LATENTKV_CHECK(n % block == 0, "quantizing ", n, " elements to ",
                   std::string(DTypeName(to)), ": not whole blocks");
    quant::QuantizeBlocks(to, src, n / block, static_cast<uint8_t*>(dst));
    return;
  }
  switch (to) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToBf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* d = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToF8E4M3(src[i]);
      return;
    }
    default:
      return;  // quantized above
  }
}

}  // namespace latentkv
