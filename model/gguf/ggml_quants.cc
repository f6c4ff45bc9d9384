#include "model/gguf/ggml_quants.h"

#include <cstring>

#include "common/check.h"
#include "common/dtype.h"

// Built with -ffp-contract=off (CMakeLists.txt): every product and
// difference rounds on its own, as numpy's do.
namespace latentkv::model {
namespace {

constexpr int kQK = 256;

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// Sub-block j's (0..7) scale and min of a q4_K / q5_K super-block, times
// the super-block's d and dmin. The 12 scale bytes hold them in 6 bits:
// j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of
// byte j + 4 with their top 2 bits from bytes j - 4 and j.
void ScaleMinK4(int j, const uint8_t* q, float d, float dmin, float* dj,
                float* mj) {
  int sc, mn;
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
  *dj = d * static_cast<float>(sc);
  *mj = dmin * static_cast<float>(mn);
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
  const uint8_t* s = b + 96;
  const float d = Half(b + 108);
  // 16 scales of 6 bits: low nibbles from bytes 0..7, high 2 bits from
  // bytes 8..11.
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
    const int high = (s[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    scales[i] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(scales[is++]);
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

void Q4_K(const uint8_t* b, float* y) {
  const float d = Half(b), dmin = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int is = 0; is < 8; is += 2, q += 32) {
    float d1, m1, d2, m2;
    ScaleMinK4(is, scales, d, dmin, &d1, &m1);
    ScaleMinK4(is + 1, scales, d, dmin, &d2, &m2);
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
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

struct Format {
  GgmlQuant type;
  GgmlQuantLayout layout;
  void (*block)(const uint8_t*, float*);  // one block into its elements
};

constexpr Format kFormats[] = {
    {GgmlQuant::kQ5_0, {32, 22, "q5_0"}, Q5_0},
    {GgmlQuant::kQ5_1, {32, 24, "q5_1"}, Q5_1},
    {GgmlQuant::kQ2_K, {kQK, 84, "q2_K"}, Q2_K},
    {GgmlQuant::kQ3_K, {kQK, 110, "q3_K"}, Q3_K},
    {GgmlQuant::kQ4_K, {kQK, 144, "q4_K"}, Q4_K},
    {GgmlQuant::kQ5_K, {kQK, 176, "q5_K"}, Q5_K},
    {GgmlQuant::kQ6_K, {kQK, 210, "q6_K"}, Q6_K},
};

const Format* FormatOf(uint32_t type) {
  for (const Format& f : kFormats) {
    if (static_cast<uint32_t>(f.type) == type) return &f;
  }
  return nullptr;
}

}  // namespace

std::optional<GgmlQuantLayout> GgmlQuantLayoutOf(uint32_t type) {
  const Format* f = FormatOf(type);
  if (f == nullptr) return std::nullopt;
  return f->layout;
}

void DequantizeGgml(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  const Format* f = FormatOf(type);
  LATENTKV_CHECK(f != nullptr, "not a dequantizable ggml type ", type);
  const GgmlQuantLayout& l = f->layout;
  LATENTKV_CHECK(n % l.block_elems == 0, n, " elements is not whole blocks of ",
                 l.name);
  for (int64_t i = 0; i < n / l.block_elems; ++i) {
    f->block(src + i * l.block_bytes, dst + i * l.block_elems);
  }
}

}  // namespace latentkv::model
