// Quantization of every block-quantized dtype (common/quant_blocks.h has the
// method; common/dtype.h the layouts).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/check.h"
#include "common/quant_blocks.h"

namespace latentkv::quant {
namespace {

void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// f16 bits of v, saturated to the largest finite half (NaN becomes 0), so a
// stored scale is always finite.
uint16_t SatF16(float v) {
  if (!(std::fabs(v) <= 65504.0f)) {
    if (std::isnan(v)) return 0;
    return v > 0 ? 0x7BFF : 0xFBFF;
  }
  return F32ToF16(v);
}

// trunc(v) clamped to [0, hi]; NaN gives 0. For v in [0, hi + 1) this is
// ggml's min(hi, (int)v).
int Level(float v, int hi) {
  if (!(v >= 0.0f)) return 0;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(v);
}

// The nearest integer to v clamped to [lo, hi]; NaN gives lo. (Truncating
// the non-negative v - lo + 0.5 rounds without a call to floor.)
int Nearest(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(v - static_cast<float>(lo) + 0.5f) + lo;
}

// --- 32-element types: ggml's reference rounding (common/dtype.h) ---

void Q8_0(const float* x, uint8_t* p) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreU16(p, F32ToF16(d));
  for (int j = 0; j < 32; ++j) {
    p[2 + j] =
        static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
  }
}

// The value of largest magnitude (the first on ties).
float LargestMagnitude(const float* x, int n) {
  float amax = 0.0f, vmax = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  return vmax;
}

void Q4_0(const float* x, uint8_t* p) {
  const float d = LargestMagnitude(x, 32) / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreU16(p, F32ToF16(d));
  for (int j = 0; j < 16; ++j) {
    p[2 + j] = static_cast<uint8_t>(Level(x[j] * id + 8.5f, 15) |
                                    (Level(x[j + 16] * id + 8.5f, 15) << 4));
  }
}

void MinMax(const float* x, int n, float* lo, float* hi) {
  *lo = x[0];
  *hi = x[0];
  for (int j = 1; j < n; ++j) {
    *lo = std::min(*lo, x[j]);
    *hi = std::max(*hi, x[j]);
  }
}

void Q4_1(const float* x, uint8_t* p) {
  float lo, hi;
  MinMax(x, 32, &lo, &hi);
  const float d = (hi - lo) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreU16(p, F32ToF16(d));
  StoreU16(p + 2, F32ToF16(lo));
  for (int j = 0; j < 16; ++j) {
    p[4 + j] =
        static_cast<uint8_t>(Level((x[j] - lo) * id + 0.5f, 15) |
                             (Level((x[j + 16] - lo) * id + 0.5f, 15) << 4));
  }
}

// q5_0 / q5_1: 5-bit levels q[32] into qh (bit 4 of each) and qs.
void PackQ5(const int q[32], uint8_t* qh, uint8_t* qs) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
    h |= static_cast<uint32_t>(q[j] >> 4) << j;
    h |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(qh, &h, 4);
}

void Q5_0(const float* x, uint8_t* p) {
  const float d = LargestMagnitude(x, 32) / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreU16(p, F32ToF16(d));
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = Level(x[j] * id + 16.5f, 31);
  PackQ5(q, p + 2, p + 6);
}

void Q5_1(const float* x, uint8_t* p) {
  float lo, hi;
  MinMax(x, 32, &lo, &hi);
  const float d = (hi - lo) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreU16(p, F32ToF16(d));
  StoreU16(p + 2, F32ToF16(lo));
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = Level((x[j] - lo) * id + 0.5f, 31);
  PackQ5(q, p + 4, p + 8);
}

// --- k-quants: per sub-block least-squares fits (quant_blocks.h) ---

// x ~ s * q - m for the sub-block's levels q.
struct Fit {
  float s = 0.0f;
  float m = 0.0f;
};

// Trial scales per search: (levels + 0.2 k) / range for k in [-5, 5]
// (0.1 steps over [-10, 10] measured no better on Gaussian data).
constexpr int kTrials = 5;
constexpr int kRefinements = 2;

// Sums over a sub-block's levels q and values x for the least-squares
// solves (floats: q <= 63 and n <= 32 keep q and qq exact).
struct Sums {
  float q = 0, qq = 0, qx = 0;
};

// Levels q = round((x + a) * b) clamped to [lo, hi] (NaN: lo), and their
// sums. Branch-free so the loop vectorizes.
Sums LevelSums(const float* x, int n, float a, float b, int lo, int hi) {
  float sq = 0, sqq = 0, sqx = 0;
  const float top = static_cast<float>(hi - lo);
  const float shift = 0.5f - static_cast<float>(lo);
#pragma omp simd reduction(+ : sq, sqq, sqx)
  for (int i = 0; i < n; ++i) {
    // Shifted to >= 0 so truncation rounds; std::max(0, NaN) is 0.
    const float u = std::min(top, std::max(0.0f, (x[i] + a) * b + shift));
    const float q = static_cast<float>(static_cast<int>(u) + lo);
    sq += q;
    sqq += q * q;
    sqx += q * x[i];
  }
  return {sq, sqq, sqx};
}

// Asymmetric: q in [0, levels], s >= 0, m >= 0.
Fit FitAsym(const float* x, int n, int levels) {
  float lo, hi;
  MinMax(x, n, &lo, &hi);
  lo = std::min(lo, 0.0f);
  if (!(hi > lo) || !std::isfinite(hi - lo)) return {0.0f, -lo};
  double sx = 0, sxx = 0;
  for (int i = 0; i < n; ++i) {
    sx += x[i];
    sxx += double{x[i]} * x[i];
  }
  // The least-squares x ~ scale * q + b for levels rounded from
  // (x + a) * mul; b <= 0 (the stored min is -b).
  auto solve = [&](float a, float mul, double* err) {
    const Sums s = LevelSums(x, n, a, mul, 0, levels);
    const double dn = n, det = dn * s.qq - double{s.q} * s.q;
    double scale = 0, b = 0;
    if (det > 0) {
      scale = (dn * s.qx - double{s.q} * sx) / det;
      b = (sx - scale * s.q) / dn;
    }
    if (det <= 0 || b > 0 || scale < 0) {  // no negative min: b = 0
      b = 0;
      scale = s.qq > 0 ? std::max(0.0, double{s.qx} / s.qq) : 0;
    }
    *err = sxx + scale * scale * s.qq + dn * b * b - 2 * scale * s.qx -
           2 * b * sx + 2 * scale * b * s.q;
    return Fit{static_cast<float>(scale), static_cast<float>(-b)};
  };
  Fit best;
  double best_err = std::numeric_limits<double>::infinity();
  for (int k = -kTrials; k <= kTrials; ++k) {
    double err;
    const Fit f =
        solve(-lo, (static_cast<float>(levels) + 0.2f * k) / (hi - lo), &err);
    if (err < best_err || k == -kTrials) best = f, best_err = err;
  }
  for (int r = 0; r < kRefinements && best.s > 0.0f; ++r) {
    double err;
    const Fit f = solve(best.m, 1.0f / best.s, &err);
    if (!(err < best_err)) break;
    best = f, best_err = err;
  }
  return best;
}

// Symmetric: q in [-levels, levels - 1], s of either sign.
Fit FitSym(const float* x, int n, int levels) {
  const float vmax = LargestMagnitude(x, n);
  if (vmax == 0.0f || !std::isfinite(vmax)) return {};
  // The best s for levels q is qx / qq, its error reduction qx^2 / qq.
  auto solve = [&](float mul, double* gain) {
    const Sums s = LevelSums(x, n, 0.0f, mul, -levels, levels - 1);
    *gain = s.qq > 0 ? double{s.qx} * s.qx / s.qq : 0;
    return Fit{s.qq > 0 ? s.qx / s.qq : 0.0f, 0.0f};
  };
  Fit best;
  double best_gain = -1;
  for (int sign : {-1, 1}) {
    for (int k = -kTrials; k <= kTrials; ++k) {
      // vmax onto -(levels + 0.2k), or onto levels - 1 + 0.2k.
      const float target = sign < 0 ? -(levels + 0.2f * k)
                                    : static_cast<float>(levels - 1) + 0.2f * k;
      double gain;
      const Fit f = solve(target / vmax, &gain);
      if (gain > best_gain) best = f, best_gain = gain;
    }
  }
  for (int r = 0; r < kRefinements && best.s != 0.0f; ++r) {
    double gain;
    const Fit f = solve(1.0f / best.s, &gain);
    if (!(gain > best_gain)) break;
    best = f, best_gain = gain;
  }
  return best;
}

// Quantizes sub-block values v[count] (each >= 0, or of either sign) to
// integer levels in [lo, hi] against a super-block scale whose f16 bits go
// to *stored: scale = max |v| / hi, or, for `negative_extreme`, the value
// of largest magnitude mapped onto lo. Returns the f16 scale's value.
float QuantizeScales(const float* v, int count, int lo, int hi,
                     bool negative_extreme, int* out, uint16_t* stored) {
  const float vmax = LargestMagnitude(v, count);
  const float d = negative_extreme ? vmax / static_cast<float>(lo)
                                   : std::fabs(vmax) / static_cast<float>(hi);
  *stored = SatF16(d);
  const float d16 = F16ToF32(*stored);
  for (int j = 0; j < count; ++j) {
    out[j] = d16 != 0.0f ? Nearest(v[j] / d16, lo, hi) : 0;
  }
  return d16;
}

// q2_K, q4_K, q5_K: sub-blocks of `sub` elements fitted asymmetrically with
// `levels`, scales and mins quantized to [0, scale_max]; q[256] the levels.
void AsymSuperBlock(const float* x, int sub, int levels, int scale_max, int* sc,
                    int* mn, uint16_t* d, uint16_t* dmin, int* q) {
  const int nsub = kKQuantBlockElems / sub;
  float s[16], m[16];
  for (int j = 0; j < nsub; ++j) {
    const Fit f = FitAsym(x + j * sub, sub, levels);
    s[j] = f.s;
    m[j] = f.m;
  }
  const float d16 = QuantizeScales(s, nsub, 0, scale_max, false, sc, d);
  const float m16 = QuantizeScales(m, nsub, 0, scale_max, false, mn, dmin);
  for (int j = 0; j < nsub; ++j) {
    // The stored scale and min, as the dequantizer computes them.
    const float S = d16 * static_cast<float>(sc[j]);
    const float M = m16 * static_cast<float>(mn[j]);
    for (int i = j * sub; i < (j + 1) * sub; ++i) {
      q[i] = S > 0.0f ? Nearest((x[i] + M) / S, 0, levels) : 0;
    }
  }
}

// q3_K, q6_K: sub-blocks of 16 fitted symmetrically with q in
// [-levels, levels - 1]; scales quantized to [scale_lo, scale_hi] with the
// largest magnitude on scale_lo; q[256] the levels.
void SymSuperBlock(const float* x, int levels, int scale_lo, int scale_hi,
                   int* sc, uint16_t* d, int* q) {
  float s[16];
  for (int j = 0; j < 16; ++j) s[j] = FitSym(x + 16 * j, 16, levels).s;
  const float d16 = QuantizeScales(s, 16, scale_lo, scale_hi, true, sc, d);
  for (int j = 0; j < 16; ++j) {
    const float S = d16 * static_cast<float>(sc[j]);
    for (int i = 16 * j; i < 16 * (j + 1); ++i) {
      q[i] = S != 0.0f ? Nearest(x[i] / S, -levels, levels - 1) : 0;
    }
  }
}

void Q2_K(const float* x, uint8_t* p) {
  int sc[16], mn[16], q[256];
  uint16_t d, dmin;
  AsymSuperBlock(x, 16, 3, 15, sc, mn, &d, &dmin, q);
  std::memset(p, 0, 84);
  for (int j = 0; j < 16; ++j)
    p[j] = static_cast<uint8_t>(sc[j] | (mn[j] << 4));
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, t = (i % 128) / 32, l = i % 32;
    p[16 + 32 * h + l] |= static_cast<uint8_t>(q[i] << (2 * t));
  }
  StoreU16(p + 80, d);
  StoreU16(p + 82, dmin);
}

void Q3_K(const float* x, uint8_t* p) {
  int sc[16], q[256];
  uint16_t d;
  SymSuperBlock(x, 4, -32, 31, sc, &d, q);
  std::memset(p, 0, 110);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, t = (i % 128) / 32, l = i % 32;
    const int u = q[i] + 4;  // 0..7: low 2 bits in qs, bit 2 in hmask
    p[32 + 32 * h + l] |= static_cast<uint8_t>((u & 3) << (2 * t));
    p[l] |= static_cast<uint8_t>((u >> 2) << (4 * h + t));
  }
  uint8_t stored[16];
  for (int j = 0; j < 16; ++j) stored[j] = static_cast<uint8_t>(sc[j] + 32);
  PackScalesQ3K(stored, p + 96);
  StoreU16(p + 108, d);
}

void Q4_KorQ5_K(const float* x, bool five, uint8_t* p) {
  int sc[8], mn[8], q[256];
  uint16_t d, dmin;
  AsymSuperBlock(x, 32, five ? 31 : 15, 63, sc, mn, &d, &dmin, q);
  StoreU16(p, d);
  StoreU16(p + 2, dmin);
  uint8_t s8[8], m8[8];
  for (int j = 0; j < 8; ++j) {
    s8[j] = static_cast<uint8_t>(sc[j]);
    m8[j] = static_cast<uint8_t>(mn[j]);
  }
  PackScaleMinK4(s8, m8, p + 4);
  uint8_t* qh = p + 16;
  uint8_t* qs = p + (five ? 48 : 16);
  if (five) std::memset(qh, 0, 32);
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      const int a = q[64 * g + l], b = q[64 * g + 32 + l];
      qs[32 * g + l] = static_cast<uint8_t>((a & 15) | ((b & 15) << 4));
      if (five) {
        qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * g)) |
                                      ((b >> 4) << (2 * g + 1)));
      }
    }
  }
}

void Q4_K(const float* x, uint8_t* p) { Q4_KorQ5_K(x, false, p); }
void Q5_K(const float* x, uint8_t* p) { Q4_KorQ5_K(x, true, p); }

void Q6_K(const float* x, uint8_t* p) {
  int sc[16], q[256];
  uint16_t d;
  SymSuperBlock(x, 32, -128, 127, sc, &d, q);
  std::memset(p, 0, 210);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, t = (i % 128) / 32, l = i % 32;
    const int u = q[i] + 32;  // 0..63
    p[64 * h + 32 * (t % 2) + l] |=
        static_cast<uint8_t>((u & 15) << (t >= 2 ? 4 : 0));
    p[128 + 32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * t));
  }
  for (int j = 0; j < 16; ++j) {
    p[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(sc[j]));
  }
  StoreU16(p + 208, d);
}

using BlockFn = void (*)(const float*, uint8_t*);

BlockFn QuantizerOf(DType type) {
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

void QuantizeBlocks(DType type, const float* src, int64_t blocks,
                    uint8_t* dst) {
  const BlockFn f = QuantizerOf(type);
  const int bytes = DTypeBlockBytes(type), elems = DTypeBlockElems(type);
  for (int64_t b = 0; b < blocks; ++b) f(src + b * elems, dst + b * bytes);
}

}  // namespace latentkv::quant
