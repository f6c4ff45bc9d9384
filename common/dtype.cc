#include "common/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/check.h"

namespace latentkv {

bool IsBlockQuantized(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_1;
}

int DTypeBlockElems(DType t) {
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

namespace {

// Block layouts (common/dtype.h); the f16 fields are read and written with
// memcpy because blocks are packed without alignment.
constexpr int kHalf = kQuantBlockElems / 2;

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

void DequantizeBlocks(const uint8_t* s, DType from, int64_t blocks,
                      float* dst) {
  const int bytes = DTypeBlockBytes(from);
  for (int64_t b = 0; b < blocks; ++b, dst += kQuantBlockElems) {
    const uint8_t* p = s + b * bytes;
    switch (from) {
      case DType::kQ8_0: {
        const float d = F16ToF32(LoadU16(p));
        for (int j = 0; j < kQuantBlockElems; ++j) {
          dst[j] = static_cast<float>(static_cast<int8_t>(p[2 + j])) * d;
        }
        break;
      }
      case DType::kQ4_0: {
        const float d = F16ToF32(LoadU16(p));
        for (int j = 0; j < kHalf; ++j) {
          dst[j] = static_cast<float>((p[2 + j] & 15) - 8) * d;
          dst[j + kHalf] = static_cast<float>((p[2 + j] >> 4) - 8) * d;
        }
        break;
      }
      case DType::kQ4_1: {
        const float d = F16ToF32(LoadU16(p));
        const float m = F16ToF32(LoadU16(p + 2));
        for (int j = 0; j < kHalf; ++j) {
          dst[j] = static_cast<float>(p[4 + j] & 15) * d + m;
          dst[j + kHalf] = static_cast<float>(p[4 + j] >> 4) * d + m;
        }
        break;
      }
      default:
        LATENTKV_CHECK(false, "not a quantized dtype");
    }
  }
}

void QuantizeBlocks(const float* src, int64_t blocks, DType to, uint8_t* d8) {
  const int bytes = DTypeBlockBytes(to);
  for (int64_t b = 0; b < blocks; ++b, src += kQuantBlockElems) {
    const float* x = src;
    uint8_t* p = d8 + b * bytes;
    switch (to) {
      case DType::kQ8_0: {
        float amax = 0.0f;
        for (int j = 0; j < kQuantBlockElems; ++j) {
          amax = std::max(amax, std::fabs(x[j]));
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        StoreU16(p, F32ToF16(d));
        for (int j = 0; j < kQuantBlockElems; ++j) {
          p[2 + j] =
              static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
        }
        break;
      }
      case DType::kQ4_0: {
        float amax = 0.0f, vmax = 0.0f;
        for (int j = 0; j < kQuantBlockElems; ++j) {
          if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            vmax = x[j];
          }
        }
        const float d = vmax / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        StoreU16(p, F32ToF16(d));
        auto q = [&](float v) {
          return std::min(15, static_cast<int>(v * id + 8.5f));
        };
        for (int j = 0; j < kHalf; ++j) {
          p[2 + j] = static_cast<uint8_t>(q(x[j]) | (q(x[j + kHalf]) << 4));
        }
        break;
      }
      case DType::kQ4_1: {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < kQuantBlockElems; ++j) {
          lo = std::min(lo, x[j]);
          hi = std::max(hi, x[j]);
        }
        const float d = (hi - lo) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        StoreU16(p, F32ToF16(d));
        StoreU16(p + 2, F32ToF16(lo));
        auto q = [&](float v) {
          return std::min(15, static_cast<int>((v - lo) * id + 0.5f));
        };
        for (int j = 0; j < kHalf; ++j) {
          p[4 + j] = static_cast<uint8_t>(q(x[j]) | (q(x[j + kHalf]) << 4));
        }
        break;
      }
      default:
        LATENTKV_CHECK(false, "not a quantized dtype");
    }
  }
}

}  // namespace

void ConvertToF32(const void* src, DType from, int64_t n, float* dst) {
  if (IsBlockQuantized(from)) {
    LATENTKV_CHECK(n % kQuantBlockElems == 0, "dequantizing ", n, " ",
                   std::string(DTypeName(from)), " elements: not whole blocks");
    DequantizeBlocks(static_cast<const uint8_t*>(src), from,
                     n / kQuantBlockElems, dst);
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
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
      return;  // dequantized above
  }
}

void ConvertFromF32(const float* src, int64_t n, DType to, void* dst) {
  if (IsBlockQuantized(to)) {
    LATENTKV_CHECK(n % kQuantBlockElems == 0, "quantizing ", n, " elements to ",
                   std::string(DTypeName(to)), ": not whole blocks");
    QuantizeBlocks(src, n / kQuantBlockElems, to, static_cast<uint8_t*>(dst));
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
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
      return;  // quantized above
  }
}

}  // namespace latentkv
