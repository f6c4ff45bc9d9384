// Dequantization of every block-quantized dtype (common/quant_blocks.h).
// Built with -ffp-contract=off (common/CMakeLists.txt): every product and
// difference rounds on its own, as numpy's do (the k-quants and q5 formats
// are checked bit for bit against gguf-py).
#include <cstring>
#include <string>

#include "common/check.h"
#include "common/quant_blocks.h"

namespace latentkv::quant {
namespace {

constexpr int kQK = kKQuantBlockElems;

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

void Q8_0(const uint8_t* p, float* y) {
  const float d = Half(p);
  for (int j = 0; j < 32; ++j) {
    y[j] = static_cast<float>(static_cast<int8_t>(p[2 + j])) * d;
  }
}

void Q4_0(const uint8_t* p, float* y) {
  const float d = Half(p);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((p[2 + j] & 15) - 8) * d;
    y[j + 16] = static_cast<float>((p[2 + j] >> 4) - 8) * d;
  }
}

void Q4_1(const uint8_t* p, float* y) {
  const float d = Half(p), m = Half(p + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(p[4 + j] & 15) * d + m;
    y[j + 16] = static_cast<float>(p[4 + j] >> 4) * d + m;
  }
}

void Q5_0(const uint8_t* b, float* y) {
  const float d = Half(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int x0 = ((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16;
    const int x1 = ((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
    y[j] = d * static_cast<float>(x0);
    y[j + 16] = d * static_cast<float>(x1);
  }
}

void Q5_1(const uint8_t* b, float* y) {
  const float d = Half(b), m = Half(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int x0 = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    const int x1 = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = d * static_cast<float>(x0) + m;
    y[j + 16] = d * static_cast<float>(x1) + m;
  }
}

void Q2_K(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = Half(b + 80), dmin = Half(b + 82);
  int is = 0;
  for (int n = 0; n < kQK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) {
          const int v = (q[l + 16 * half] >> shift) & 3;
          *y++ = dl * static_cast<float>(v) - ml;
        }
      }
    }
    q += 32;
  }
}

void Q3_K(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const float d = Half(b + 108);
  uint8_t stored[16];
  UnpackScalesQ3K(b + 96, stored);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(stored[is++] - 32);
        for (int l = 0; l < 16; ++l) {
          const int i = l + 16 * half;
          const int v = ((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}

// Sub-block j's scale and min of a q4_K / q5_K super-block times d, dmin.
void ScaleMinK4(int j, const uint8_t* q, float d, float dmin, float* dj,
                float* mj) {
  int sc, mn;
  UnpackScaleMinK4(q, j, &sc, &mn);
  *dj = d * static_cast<float>(sc);
  *mj = dmin * static_cast<float>(mn);
}

void Q4_K(const uint8_t* b, float* y) {
  const float d = Half(b), dmin = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int is = 0; is < 8; is += 2, q += 32) {
    float d1, m1, d2, m2;
    ScaleMinK4(is, scales, d, dmin, &d1, &m1);
    ScaleMinK4(is + 1, scales, d, dmin, &d2, &m2);
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    }
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

void Q5_K(const uint8_t* b, float* y) {
  const float d = Half(b), dmin = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  for (int is = 0; is < 8; is += 2, ql += 32) {
    float d1, m1, d2, m2;
    ScaleMinK4(is, scales, d, dmin, &d1, &m1);
    ScaleMinK4(is + 1, scales, d, dmin, &d2, &m2);
    const uint8_t u1 = static_cast<uint8_t>(1u << is);
    const uint8_t u2 = static_cast<uint8_t>(2u << is);
    for (int l = 0; l < 32; ++l) {
      const int v = (ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0);
      *y++ = d1 * static_cast<float>(v) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int v = (ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0);
      *y++ = d2 * static_cast<float>(v) - m2;
    }
  }
}

void Q6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = Half(b + 208);
  for (int n = 0; n < kQK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn DequantizerOf(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return Q8_0;
    case DType::kQ4_0:
      return Q4_0;
    case DType::kQ4_1:
      return Q4_1;
    case DType::kQ5_0:
      return Q5_0;
    case DType::kQ5_1:
      return Q5_1;
    case DType::kQ2_K:
      return Q2_K;
    case DType::kQ3_K:
      return Q3_K;
    case DType::kQ4_K:
      return Q4_K;
    case DType::kQ5_K:
      return Q5_K;
    case DType::kQ6_K:
      return Q6_K;
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
    case DType::kF8E4M3:
      break;
  }
  LATENTKV_CHECK(false,
                 "not a quantized dtype: ", std::string(DTypeName(type)));
}

}  // namespace

void UnpackScaleMinK4(const uint8_t* q, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void PackScaleMinK4(const uint8_t sc[8], const uint8_t mn[8], uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    q[j + 8] =
        static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

void UnpackScalesQ3K(const uint8_t* s, uint8_t sc[16]) {
  // Low nibbles from bytes 0..7 (scales 0..7 low, 8..15 high nibble), the
  // top 2 bits from bytes 8..11.
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
    const int high = (s[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    sc[i] = static_cast<uint8_t>(low | (high << 4));
  }
}

void PackScalesQ3K(const uint8_t sc[16], uint8_t* s) {
  for (int i = 0; i < 8; ++i) {
    s[i] = static_cast<uint8_t>((sc[i] & 0xF) | ((sc[i + 8] & 0xF) << 4));
  }
  for (int k = 0; k < 4; ++k) {
    uint8_t v = 0;
    for (int g = 0; g < 4; ++g) {
      v = static_cast<uint8_t>(v | (((sc[4 * g + k] >> 4) & 3) << (2 * g)));
    }
    s[8 + k] = v;
  }
}

void DequantizeBlocks(DType type, const uint8_t* src, int64_t blocks,
                      float* dst) {
  const BlockFn f = DequantizerOf(type);
  const int bytes = DTypeBlockBytes(type), elems = DTypeBlockElems(type);
  for (int64_t b = 0; b < blocks; ++b) f(src + b * bytes, dst + b * elems);
}

}  // namespace latentkv::quant
