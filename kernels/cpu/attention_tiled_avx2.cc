// Tiled paged attention (see attention_tiled.h). Built with -mavx2 -mfma;
// calls no inline library code, so none compiled with those flags leaks into
// the rest of the binary.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/attention_tiled.h"
#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/fast_exp.h"

namespace latentkv::kernels::internal {
namespace {

constexpr float kNegInf = -__builtin_inff();

// e^x for x <= 0: fast_exp.h's ExpNonPositive (same constants), 8 lanes.
inline __m256 Exp8(__m256 x) {
  using namespace exp_poly;
  const __m256 round = _mm256_set1_ps(kRound);
  x = _mm256_max_ps(x, _mm256_set1_ps(kMin));
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), round);
  const __m256 n = _mm256_sub_ps(t, round);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP[0]);
#pragma GCC unroll 5
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP[i]));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
                                 _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t),
                                         _mm256_set1_epi32(-0x4B400000 + 127)),
                        23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
}

// Lane k of the result: the sum of a[k]'s 8 lanes, always as
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), whatever k.
inline __m256 Reduce8(const __m256 a[8]) {
  const __m256 h0 = _mm256_hadd_ps(a[0], a[1]);
  const __m256 h1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h2 = _mm256_hadd_ps(a[4], a[5]);
  const __m256 h3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 g0 = _mm256_hadd_ps(h0, h1);  // a0..a3: lanes 0-3 / 4-7 halves
  const __m256 g1 = _mm256_hadd_ps(h2, h3);
  return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20),
                       _mm256_permute2f128_ps(g0, g1, 0x31));
}

// scores[m][s] = q[m] . k[s] for MB queries from m0 and SB slots from s0
// (MB * SB <= 8; slots past len are computed on a repeated row and not
// stored). Each pair's dot is the same arithmetic whatever MB and SB: 8
// lanes accumulated over d in order, then Reduce8's tree.
template <int MB, int SB>
inline void ScoreBlock(const float* const* q, const float* k, int32_t d,
                       int32_t len, int64_t l8, int64_t m0, int32_t s0,
                       float* scores) {
  static_assert(MB * SB <= 8);
  __m256 acc[8];
#pragma GCC unroll 8
  for (int a = 0; a < 8; ++a) acc[a] = _mm256_setzero_ps();
  const float* ks[SB];
#pragma GCC unroll 8
  for (int j = 0; j < SB; ++j) {
    ks[j] = k + int64_t{s0 + j < len ? s0 + j : len - 1} * d;
  }
  const float* qm[MB];
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) qm[m] = q[m0 + m];
  for (int32_t i = 0; i < d; i += 8) {
    __m256 kv[SB];
#pragma GCC unroll 8
    for (int j = 0; j < SB; ++j) kv[j] = _mm256_loadu_ps(ks[j] + i);
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) {
      const __m256 qv = _mm256_loadu_ps(qm[m] + i);
#pragma GCC unroll 8
      for (int j = 0; j < SB; ++j) {
        acc[m * SB + j] = _mm256_fmadd_ps(qv, kv[j], acc[m * SB + j]);
      }
    }
  }
  float t[8];
  _mm256_storeu_ps(t, Reduce8(acc));
  for (int m = 0; m < MB; ++m) {
    for (int j = 0; j < SB && s0 + j < len; ++j) {
      scores[(m0 + m) * l8 + s0 + j] = t[m * SB + j];
    }
  }
}

// Every row's scores over the page's len slots.
template <int MB, int SB>
inline void ScoreRows(const float* const* q, const float* k, int32_t d,
                      int32_t len, int64_t l8, int64_t m0, float* scores) {
  for (int32_t s0 = 0; s0 < len; s0 += SB) {
    ScoreBlock<MB, SB>(q, k, d, len, l8, m0, s0, scores);
  }
}

// out[m][dv0 ..] += sum over slots s < len of w[m][s] * v[s][..], for MB
// rows from m0 and DV dim vectors from dv0; slots in order.
template <int MB, int DV>
inline void WeightedBlock(const float* w, int64_t l8, const float* v,
                          int32_t d_vo, int32_t len, const int64_t* rows,
                          int64_t m0, int64_t dv0, float* out) {
  __m256 acc[MB][DV];
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 4
    for (int j = 0; j < DV; ++j) {
      acc[m][j] = _mm256_loadu_ps(out + rows[m0 + m] * d_vo + 8 * (dv0 + j));
    }
  }
  const float* wm[MB];
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) wm[m] = w + rows[m0 + m] * l8;
  // The rows' weights broadcast first, then one V vector at a time: 12
  // accumulators + 3 + 1 registers (all 16 ymm; loading the 4 V vectors
  // first spilled).
  for (int32_t s = 0; s < len; ++s) {
    __m256 b[MB];
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) b[m] = _mm256_broadcast_ss(wm[m] + s);
    const float* vs = v + int64_t{s} * d_vo + 8 * dv0;
#pragma GCC unroll 4
    for (int j = 0; j < DV; ++j) {
      const __m256 vv = _mm256_loadu_ps(vs + 8 * j);
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m)
        acc[m][j] = _mm256_fmadd_ps(b[m], vv, acc[m][j]);
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 4
    for (int j = 0; j < DV; ++j) {
      _mm256_storeu_ps(out + rows[m0 + m] * d_vo + 8 * (dv0 + j), acc[m][j]);
    }
  }
}

template <int MB>
inline void WeightedRows(const float* w, int64_t l8, const float* v,
                         int32_t d_vo, int32_t len, const int64_t* rows,
                         int64_t m0, float* out) {
  const int64_t dvs = d_vo / 8;
  int64_t dv = 0;
  for (; dv + 4 <= dvs; dv += 4) {
    WeightedBlock<MB, 4>(w, l8, v, d_vo, len, rows, m0, dv, out);
  }
  switch (dvs - dv) {
    case 3:
      WeightedBlock<MB, 3>(w, l8, v, d_vo, len, rows, m0, dv, out);
      break;
    case 2:
      WeightedBlock<MB, 2>(w, l8, v, d_vo, len, rows, m0, dv, out);
      break;
    case 1:
      WeightedBlock<MB, 1>(w, l8, v, d_vo, len, rows, m0, dv, out);
      break;
    default:
      break;
  }
}

}  // namespace

void AttendTileAvx2(const PagedAttentionArgs& a, int32_t kvh, int64_t t0,
                    int64_t t1, int32_t p_begin, int32_t p_end,
                    int32_t last_len, TiledAttentionScratch* scratch) {
  const int32_t group =
      a.n_heads / a.n_kv_heads > 0 ? a.n_heads / a.n_kv_heads : 1;
  const int32_t h0 = kvh * group;
  const int32_t heads = h0 + group <= a.n_heads ? group : a.n_heads - h0;
  const int64_t rows = (t1 - t0) * heads;
  const int32_t d_qk = a.d_qk, d_vo = a.d_vo, ps = a.page_size;
  const int64_t l8 = (ps + 7) / 8 * 8;
  TiledAttentionScratch& sc = *scratch;
  sc.scores.resize(rows * l8);
  sc.out.assign(rows * d_vo, 0.0f);
  sc.max.assign(rows, kNegInf);
  sc.sum.assign(rows, 0.0f);
  sc.q.resize(rows);
  sc.pos.resize(l8);
  sc.live.resize(rows);
  const bool convert = a.kv_dtype != DType::kF32;
  if (convert) {
    sc.k.resize(int64_t{ps} * d_qk);
    sc.v.resize(int64_t{ps} * d_vo);
  }
  // Row m = (t - t0) * heads + g: its query, position and window edge.
  int32_t max_pos = INT32_MIN;
  int64_t min_hidden = INT64_MAX;
  for (int64_t t = t0; t < t1; ++t) {
    for (int32_t g = 0; g < heads; ++g) {
      sc.q[(t - t0) * heads + g] = a.q + (t * a.n_heads + h0 + g) * d_qk;
    }
    const int32_t qp = a.q_pos[t];
    max_pos = qp > max_pos ? qp : max_pos;
    const int64_t hidden =
        a.window > 0 ? int64_t{qp} - a.window : int64_t{INT32_MIN};
    min_hidden = hidden < min_hidden ? hidden : min_hidden;
  }
  const float k_scale = a.k_scale == nullptr ? 1.0f : a.k_scale[kvh];
  const float v_scale = a.v_scale == nullptr ? 1.0f : a.v_scale[kvh];
  const int64_t elem = DTypeSize(a.kv_dtype);
  // Page positions (INT32_MAX past the length) and the rows that see the
  // page.
  int32_t* pos = sc.pos.data();
  int64_t* live = sc.live.data();
  for (int32_t p = p_begin; p < p_end; ++p) {
    const int64_t page = a.kv_indices[p];
    const int32_t len =
        p == p_end - 1 ? (last_len < 0 ? 0 : (last_len > ps ? ps : last_len))
                       : ps;
    const int32_t* page_pos = a.pos_pool + page * ps;
    bool visible = false;
    for (int32_t s = 0; s < len; ++s) {
      pos[s] = page_pos[s];
      visible |= pos[s] <= max_pos && pos[s] > min_hidden;
    }
    if (!visible) continue;  // every key in all rows' future or past windows
    for (int64_t s = len; s < l8; ++s) pos[s] = INT32_MAX;
    const float* k;
    const float* v;
    if (convert) {
      KvToF32(static_cast<const char*>(a.k_pool) + page * ps * d_qk * elem,
              a.kv_dtype, int64_t{len} * d_qk, k_scale, sc.k.data());
      KvToF32(static_cast<const char*>(a.v_pool) + page * ps * d_vo * elem,
              a.kv_dtype, int64_t{len} * d_vo, v_scale, sc.v.data());
      k = sc.k.data();
      v = sc.v.data();
    } else {
      k = static_cast<const float*>(a.k_pool) + page * ps * d_qk;
      v = static_cast<const float*>(a.v_pool) + page * ps * d_vo;
    }
    float* scores = sc.scores.data();
    const float* const* qs = sc.q.data();
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4)
      ScoreRows<4, 2>(qs, k, d_qk, len, l8, m, scores);
    switch (rows - m) {
      case 3:
        ScoreRows<3, 2>(qs, k, d_qk, len, l8, m, scores);
        break;
      case 2:
        ScoreRows<2, 4>(qs, k, d_qk, len, l8, m, scores);
        break;
      case 1:
        ScoreRows<1, 8>(qs, k, d_qk, len, l8, m, scores);
        break;
      default:
        break;
    }
    // Mask, online softmax and weights per row; rows that see nothing here
    // are left out of the weighted sum.
    const __m256 scale = _mm256_set1_ps(a.scale);
    int64_t n_live = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t qp = a.q_pos[t0 + r / heads];
      const int64_t hidden64 =
          a.window > 0 ? int64_t{qp} - a.window : int64_t{INT32_MIN};
      const __m256i qv = _mm256_set1_epi32(qp);
      const __m256i hv = _mm256_set1_epi32(
          static_cast<int32_t>(hidden64 < INT32_MIN ? INT32_MIN : hidden64));
      float* row = scores + r * l8;
      __m256 mx = _mm256_set1_ps(kNegInf);
      for (int64_t s = 0; s < l8; s += 8) {
        const __m256i pv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pos + s));
        // Visible: pos <= q_pos and pos > hidden.
        const __m256i vis = _mm256_andnot_si256(_mm256_cmpgt_epi32(pv, qv),
                                                _mm256_cmpgt_epi32(pv, hv));
        const __m256 x =
            _mm256_blendv_ps(_mm256_set1_ps(kNegInf),
                             _mm256_mul_ps(_mm256_loadu_ps(row + s), scale),
                             _mm256_castsi256_ps(vis));
        _mm256_storeu_ps(row + s, x);
        mx = _mm256_max_ps(mx, x);
      }
      const float page_max = avx2::Max8(mx);
      if (page_max == kNegInf) continue;
      float& run_max = sc.max[r];
      float* o = sc.out.data() + r * d_vo;
      if (page_max > run_max) {
        // 0 when run_max == -inf (nothing seen yet).
        const float corr = __builtin_expf(run_max - page_max);
        sc.sum[r] *= corr;
        const __m256 c = _mm256_set1_ps(corr);
        for (int32_t i = 0; i < d_vo; i += 8) {
          _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), c));
        }
        run_max = page_max;
      }
      const __m256 mv = _mm256_set1_ps(run_max);
      __m256 total = _mm256_setzero_ps();
      for (int64_t s = 0; s < l8; s += 8) {
        const __m256 x = _mm256_loadu_ps(row + s);
        // Hidden slots weigh 0 (Exp8 alone would give e^-87).
        const __m256 w = _mm256_andnot_ps(
            _mm256_cmp_ps(x, _mm256_set1_ps(kNegInf), _CMP_EQ_OQ),
            Exp8(_mm256_sub_ps(x, mv)));
        _mm256_storeu_ps(row + s, w);
        total = _mm256_add_ps(total, w);
      }
      sc.sum[r] += avx2::Sum8(total);
      live[n_live++] = r;
    }
    int64_t j = 0;
    for (; j + 3 <= n_live; j += 3) {
      WeightedRows<3>(scores, l8, v, d_vo, len, live, j, sc.out.data());
    }
    for (; j < n_live; ++j) {
      WeightedRows<1>(scores, l8, v, d_vo, len, live, j, sc.out.data());
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / heads;
    const int32_t g = static_cast<int32_t>(r % heads);
    float* dst = a.out + (t * a.n_heads + h0 + g) * d_vo;
    const float* o = sc.out.data() + r * d_vo;
    const float inv = sc.sum[r] > 0.0f ? 1.0f / sc.sum[r] : 0.0f;
    for (int32_t i = 0; i < d_vo; ++i) dst[i] = o[i] * inv;
  }
}

}  // namespace latentkv::kernels::internal
