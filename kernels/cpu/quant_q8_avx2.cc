// Int8-activation products over block-quantized weights (see quant_q8.h).
// Built with -mavx2 -mfma -mf16c; uses no inline library code, so none
// compiled with those flags leaks into the rest of the binary.
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/quant_k_formats.h"
#include "kernels/cpu/quant_q8.h"

namespace latentkv::kernels::internal {
namespace {

using avx2::Sum8;
namespace qk = quant_k;

// Weight rows decoded per tile (L1/L2-resident while the inputs pass).
constexpr int64_t kTileRows = 16;

// A decoded tile: per row, the levels (cols bytes, natural order; q8_0's
// signed, the others' unsigned), per 32-element chunk 8 floats of S (lanes
// 0-3 the first 16 elements' S, lanes 4-7 the second's: vpmaddwd's lane
// order), and per 16 elements M.
struct Tile {
  std::vector<uint8_t> levels;
  std::vector<float> s;
  std::vector<float> m;
  void Resize(int64_t cols) {
    levels.resize(kTileRows * cols);
    s.resize(kTileRows * cols / 4);
    m.resize(kTileRows * cols / 16);
  }
};

inline void StoreLevels(uint8_t* dst, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
}

// One 32-element chunk's S (two 16-element groups) and M.
inline void StoreScales(float s0, float s1, float m0, float m1, float* s,
                        float* m) {
  _mm256_storeu_ps(s, _mm256_setr_ps(s0, s0, s0, s0, s1, s1, s1, s1));
  m[0] = m0;
  m[1] = m1;
}

// 16 nibble bytes at p as 32 levels: low nibbles elements 0-15, high 16-31.
inline __m256i NibbleLevels(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask),
                          _mm_and_si128(v, mask));
}

// Row `r` of W (dtype, cols) into tile row `i`.
void DecodeRow(const uint8_t* w, DType dtype, int64_t cols, int64_t r,
               int64_t i, Tile& t) {
  const uint8_t* b = w + r * DTypeRowBytes(dtype, cols);
  uint8_t* lv = t.levels.data() + i * cols;
  float* s = t.s.data() + i * cols / 4;
  float* m = t.m.data() + i * cols / 16;
  const int64_t chunks = cols / 32;
  switch (dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: {
      const int64_t bytes = DTypeRowBytes(dtype, 32);
      for (int64_t c = 0; c < chunks; ++c, b += bytes) {
        const float d = qk::LoadF16(b);
        float off = 0.0f;
        if (dtype == DType::kQ8_0) {
          StoreLevels(lv + 32 * c, qk::Load256(b + 2));
        } else if (dtype == DType::kQ4_0) {
          StoreLevels(lv + 32 * c, NibbleLevels(b + 2));
          off = 8.0f * d;
        } else {
          StoreLevels(lv + 32 * c, NibbleLevels(b + 4));
          off = -qk::LoadF16(b + 2);
        }
        StoreScales(d, d, off, off, s + 8 * c, m + 2 * c);
      }
      return;
    }
    case DType::kQ5_0:
    case DType::kQ5_1:
      qk::WithFormat(dtype, [&]<typename F>() {
        if constexpr (F::kElems == 32) {
          for (int64_t c = 0; c < chunks; ++c, b += F::kBytes) {
            float sc = 0.0f, off = 0.0f;
            F::Prepare(b, &sc, &off);
            StoreLevels(lv + 32 * c, F::template Levels<0>(b));
            StoreScales(sc, sc, off, off, s + 8 * c, m + 2 * c);
          }
        }
      });
      return;
    default:
      break;
  }
  qk::WithFormat(dtype, [&]<typename F>() {
    if constexpr (F::kElems == 256) {
      for (int64_t blk = 0; blk < chunks / 8; ++blk, b += F::kBytes) {
        const qk::Scales sc = F::Prepare(b);
        float sf[16], mf[16];
        _mm256_storeu_ps(sf, sc.s[0]);
        _mm256_storeu_ps(sf + 8, sc.s[1]);
        _mm256_storeu_ps(mf, sc.m[0]);
        _mm256_storeu_ps(mf + 8, sc.m[1]);
        qk::Unroll<8>([&]<int C>() {
          const int64_t c = 8 * blk + C;
          StoreLevels(lv + 32 * c, F::template Levels<C>(b));
          if constexpr (F::kSub == 32) {
            StoreScales(sf[C], sf[C], mf[C], mf[C], s + 8 * c, m + 2 * c);
          } else {
            StoreScales(sf[2 * C], sf[2 * C + 1], mf[2 * C], mf[2 * C + 1],
                        s + 8 * c, m + 2 * c);
          }
        });
      }
    }
  });
}

// R tile rows x N inputs over every chunk: out[r][j] = sum over chunks of
// S * d * (l . q) (the M term is added by the caller).
template <int R, int N, bool kSigned>
inline void Micro(const uint8_t* lv, const float* sv, int64_t cols,
                  const Q8Activations& a, int64_t j0, float out[R][N]) {
  const int64_t chunks = cols / 32;
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* xq = a.q + j0 * cols;
  const float* xd = a.d + j0 * chunks;
  for (int64_t c = 0; c < chunks; ++c) {
    __m256i l[R], u[R];
    __m256 s[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      l[r] = qk::Load256(lv + r * cols + 32 * c);
      u[r] = kSigned ? _mm256_abs_epi8(l[r]) : l[r];
      s[r] = _mm256_loadu_ps(sv + r * (cols / 4) + 8 * c);
    }
#pragma GCC unroll 4
    for (int j = 0; j < N; ++j) {
      const __m256i x = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(xq + j * cols + 32 * c));
      const __m256 d = _mm256_broadcast_ss(xd + j * chunks + c);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const __m256i p =
            _mm256_maddubs_epi16(u[r], kSigned ? _mm256_sign_epi8(x, l[r]) : x);
        acc[r][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                            _mm256_mul_ps(s[r], d), acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < N; ++j) out[r][j] = Sum8(acc[r][j]);
  }
}

// sum_g m[g] * qsum[g] over `groups` (a multiple of 2).
inline float OffsetDot(const float* m, const float* qsum, int64_t groups) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    acc =
        _mm256_fmadd_ps(_mm256_loadu_ps(m + g), _mm256_loadu_ps(qsum + g), acc);
  }
  float t = Sum8(acc);
  for (; g < groups; ++g) t += m[g] * qsum[g];
  return t;
}

// Rows [i, i + R) of the tile (W rows rt + i ..) times inputs [j0, j0 + N).
template <int R, int N, bool kSigned>
void Block(const Tile& t, const Q8Activations& a, int64_t i, int64_t j0,
           int64_t rt, float* y, int64_t ldy) {
  const int64_t cols = a.cols;
  const int64_t groups = cols / 16;
  float out[R][N];
  Micro<R, N, kSigned>(t.levels.data() + i * cols, t.s.data() + i * cols / 4,
                       cols, a, j0, out);
  for (int r = 0; r < R; ++r) {
    const float* m = t.m.data() + (i + r) * groups;
    for (int j = 0; j < N; ++j) {
      y[(j0 + j) * ldy + rt + i + r] =
          out[r][j] - OffsetDot(m, a.qsum + (j0 + j) * groups, groups);
    }
  }
}

// Block<R, N> with N = nj (1..4) chosen at run time.
template <int R, bool kSigned>
void BlockN(int64_t nj, const Tile& t, const Q8Activations& a, int64_t i,
            int64_t j0, int64_t rt, float* y, int64_t ldy) {
  switch (nj) {
    case 4:
      return Block<R, 4, kSigned>(t, a, i, j0, rt, y, ldy);
    case 3:
      return Block<R, 3, kSigned>(t, a, i, j0, rt, y, ldy);
    case 2:
      return Block<R, 2, kSigned>(t, a, i, j0, rt, y, ldy);
    default:
      return Block<R, 1, kSigned>(t, a, i, j0, rt, y, ldy);
  }
}

template <bool kSigned>
void Rows(const Q8Activations& a, const uint8_t* w, DType dtype, int64_t r0,
          int64_t r1, float* y, int64_t ldy) {
  // 2 rows x 4 inputs: 8 accumulators, the rows' levels and scales, one
  // input vector and its scale in 16 registers (q8_0's signed levels also
  // keep their absolute values: 3 inputs).
  constexpr int64_t kInputs = kSigned ? 3 : 4;
  thread_local Tile tile;
  tile.Resize(a.cols);
  for (int64_t rt = r0; rt < r1; rt += kTileRows) {
    const int64_t t = r1 - rt < kTileRows ? r1 - rt : kTileRows;
    for (int64_t i = 0; i < t; ++i)
      DecodeRow(w, dtype, a.cols, rt + i, i, tile);
    for (int64_t j0 = 0; j0 < a.n; j0 += kInputs) {
      const int64_t nj = a.n - j0 < kInputs ? a.n - j0 : kInputs;
      int64_t i = 0;
      for (; i + 2 <= t; i += 2) {
        BlockN<2, kSigned>(nj, tile, a, i, j0, rt, y, ldy);
      }
      if (i < t) BlockN<1, kSigned>(nj, tile, a, i, j0, rt, y, ldy);
    }
  }
}

}  // namespace

void QuantizeQ8Avx2(const float* x, int64_t cols, int64_t j0, int64_t j1,
                    int8_t* q, float* d, float* qsum) {
  const int64_t chunks = cols / 32;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t b = j * chunks + c;
      const float* xb = x + j * cols + 32 * c;
      __m256 v[4];
      __m256 amax = _mm256_setzero_ps();
      int bad = 0;
      for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(xb + 8 * k);
        const __m256 av = _mm256_andnot_ps(sign, v[k]);
        amax = _mm256_max_ps(amax, av);
        // Infinite or NaN (unordered or not below inf).
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(av, inf, _CMP_NLT_UQ));
      }
      const float am = avx2::Max8(amax);
      const float id = bad != 0 || am == 0.0f ? 0.0f : 127.0f / am;
      d[b] = bad != 0 ? __builtin_nanf("") : am / 127.0f;
      __m256i iv[4];
      for (int k = 0; k < 4; ++k) {
        iv[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(id)));
      }
      const __m256i s16a = _mm256_packs_epi32(iv[0], iv[1]);
      const __m256i s16b = _mm256_packs_epi32(iv[2], iv[3]);
      const __m256i s8 =
          _mm256_permutevar8x32_epi32(_mm256_packs_epi16(s16a, s16b), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j * cols + 32 * c),
                          s8);
      // d * (sum of q) over elements 0-15 and 16-31.
      const __m256i lo = _mm256_add_epi32(iv[0], iv[1]);
      const __m256i hi = _mm256_add_epi32(iv[2], iv[3]);
      const __m256i sums = _mm256_hadd_epi32(lo, hi);  // per lane: lo lo hi hi
      const __m256i sums2 = _mm256_hadd_epi32(sums, sums);
      const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sums2),
                                      _mm256_extracti128_si256(sums2, 1));
      qsum[2 * b] = d[b] * static_cast<float>(_mm_cvtsi128_si32(t));
      qsum[2 * b + 1] = d[b] * static_cast<float>(_mm_extract_epi32(t, 1));
    }
  }
}

void Q8RowsAvx2(const Q8Activations& a, const uint8_t* w, DType dtype,
                int64_t r0, int64_t r1, float* y, int64_t ldy) {
  if (r0 >= r1 || a.n <= 0) return;
  if (dtype == DType::kQ8_0) {
    Rows<true>(a, w, dtype, r0, r1, y, ldy);
  } else {
    Rows<false>(a, w, dtype, r0, r1, y, ldy);
  }
}

}  // namespace latentkv::kernels::internal
