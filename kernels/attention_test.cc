// PagedAttention and WriteKv against a dense float64 softmax reference.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// A view of f32 pools in host vectors (page_size is not needed by WriteKv).
KvPoolView F32Pool(float* k, float* v, int32_t* pos, int32_t n_kv_heads,
                   int32_t d_qk, int32_t d_vo) {
  KvPoolView p;
  p.n_kv_heads = n_kv_heads;
  p.d_qk = d_qk;
  p.d_vo = d_vo;
  p.k = k;
  p.v = v;
  p.pos = pos;
  return p;
}

struct Case {
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t d_qk = 12;
  int32_t d_vo = 20;
  int32_t page_size = 4;
  // Per sequence: cached tokens of kv head 0 (head h keeps h fewer, as if
  // evicted per head), query rows, and whether rows are a prefill chunk.
  std::vector<int32_t> kv_len = {9, 1, 30};
  std::vector<int32_t> q_rows = {3, 1, 5};
  int32_t window = 0;  // sliding window (0: full causal)
  uint32_t seed = 1;
  // Also attend each query row alone (a batch of one decode-like row) and
  // require the batched outputs bit for bit: results must not depend on how
  // prefill is chunked or batched.
  bool check_rows_alone = false;
};

// One cached token of one (sequence, kv head).
struct Token {
  int32_t pos;
  std::vector<float> k, v;
};

// Sets *zero_rows (if given) to the (row, head) pairs that saw no slot.
void RunCase(const Case& c, int* zero_rows_out = nullptr) {
  std::mt19937 rng(c.seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const int32_t num_seqs = static_cast<int32_t>(c.kv_len.size());
  const int32_t group = c.n_heads / c.n_kv_heads;

  // Cached tokens per (seq, kv head): increasing positions with gaps.
  std::vector<std::vector<Token>> cache(num_seqs * c.n_kv_heads);
  std::vector<int32_t> max_pos(num_seqs, 0);
  for (int32_t s = 0; s < num_seqs; ++s) {
    for (int32_t h = 0; h < c.n_kv_heads; ++h) {
      const int32_t len = std::max(1, c.kv_len[s] - h);
      int32_t pos = static_cast<int32_t>(rng() % 3);
      for (int32_t i = 0; i < len; ++i) {
        Token t{pos, std::vector<float>(c.d_qk), std::vector<float>(c.d_vo)};
        for (float& f : t.k) f = uni(rng) * 2.0f;
        for (float& f : t.v) f = uni(rng);
        cache[s * c.n_kv_heads + h].push_back(std::move(t));
        max_pos[s] = std::max(max_pos[s], pos);
        pos += 1 + static_cast<int32_t>(rng() % 3);  // gaps: evicted tokens
      }
    }
  }

  // Page lists: pages of each (seq, head) get ids from a shuffled pool.
  std::vector<int32_t> kv_indptr = {0};
  std::vector<int32_t> last_len;
  int32_t num_pages = 0;
  for (const auto& toks : cache) {
    const int32_t pages =
        (static_cast<int32_t>(toks.size()) + c.page_size - 1) / c.page_size;
    num_pages += pages;
    kv_indptr.push_back(num_pages);
    last_len.push_back(static_cast<int32_t>(toks.size()) -
                       (pages - 1) * c.page_size);
  }
  std::vector<int32_t> ids(num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> kv_indices = ids;

  // Fill the pool with WriteKv; unused slots hold poison that must be ignored.
  const int64_t slots = int64_t{num_pages} * c.page_size;
  std::vector<float> k_pool(slots * c.d_qk,
                            std::numeric_limits<float>::quiet_NaN());
  std::vector<float> v_pool(slots * c.d_vo,
                            std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> pos_pool(slots, 0);
  for (size_t i = 0; i < cache.size(); ++i) {
    for (size_t j = 0; j < cache[i].size(); ++j) {
      const Token& t = cache[i][j];
      const int64_t slot =
          int64_t{kv_indices[kv_indptr[i] + j / c.page_size]} * c.page_size +
          j % c.page_size;
      WriteKv(t.k.data(), t.v.data(), &t.pos, 1, &slot,
              F32Pool(k_pool.data(), v_pool.data(), pos_pool.data(), 1, c.d_qk,
                      c.d_vo));
    }
  }

  // Queries: rows end at the sequence's last position (prefill chunk) or
  // one past it (decode); the first row of a chunk may precede every cached
  // token of some head, which must then give zeros.
  std::vector<int32_t> q_indptr = {0};
  std::vector<int32_t> q_pos;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t rows = c.q_rows[s];
    const int32_t last = rows == 1 ? max_pos[s] + 1 : max_pos[s];
    for (int32_t r = 0; r < rows; ++r) {
      q_pos.push_back(std::max(-1, last - (rows - 1 - r) * 2));
    }
    q_indptr.push_back(q_indptr.back() + rows);
  }
  const int32_t total_q = q_indptr.back();
  std::vector<float> q(int64_t{total_q} * c.n_heads * c.d_qk);
  for (float& f : q) f = uni(rng);
  std::vector<float> out(int64_t{total_q} * c.n_heads * c.d_vo, 777.0f);

  PagedAttentionArgs a;
  a.num_seqs = num_seqs;
  a.n_heads = c.n_heads;
  a.n_kv_heads = c.n_kv_heads;
  a.d_qk = c.d_qk;
  a.d_vo = c.d_vo;
  a.page_size = c.page_size;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.d_qk));
  a.window = c.window;
  a.q_indptr = q_indptr.data();
  a.q = q.data();
  a.q_pos = q_pos.data();
  a.kv_indptr = kv_indptr.data();
  a.kv_indices = kv_indices.data();
  a.kv_last_page_len = last_len.data();
  a.k_pool = k_pool.data();
  a.v_pool = v_pool.data();
  a.pos_pool = pos_pool.data();
  a.out = out.data();
  PagedAttention(a);

  int zero_rows = 0;
  for (int32_t s = 0; s < num_seqs; ++s) {
    for (int32_t t = q_indptr[s]; t < q_indptr[s + 1]; ++t) {
      for (int32_t h = 0; h < c.n_heads; ++h) {
        SCOPED_TRACE("seq " + std::to_string(s) + " row " + std::to_string(t) +
                     " head " + std::to_string(h));
        const auto& toks = cache[s * c.n_kv_heads + h / group];
        const float* qh = &q[(int64_t{t} * c.n_heads + h) * c.d_qk];
        std::vector<double> score;
        std::vector<const Token*> vis;
        for (const Token& tok : toks) {
          if (tok.pos > q_pos[t]) continue;
          if (c.window > 0 && q_pos[t] - tok.pos >= c.window) continue;
          double d = 0.0;
          for (int i = 0; i < c.d_qk; ++i) d += double{qh[i]} * tok.k[i];
          score.push_back(d / std::sqrt(static_cast<double>(c.d_qk)));
          vis.push_back(&tok);
        }
        std::vector<double> ref(c.d_vo, 0.0);
        if (!vis.empty()) {
          const double m = *std::max_element(score.begin(), score.end());
          double l = 0.0;
          for (size_t i = 0; i < vis.size(); ++i) {
            const double p = std::exp(score[i] - m);
            l += p;
            for (int d = 0; d < c.d_vo; ++d) ref[d] += p * vis[i]->v[d];
          }
          for (double& r : ref) r /= l;
        } else {
          ++zero_rows;
        }
        const float* o = &out[(int64_t{t} * c.n_heads + h) * c.d_vo];
        for (int d = 0; d < c.d_vo; ++d) ASSERT_NEAR(o[d], ref[d], 2e-5);
      }
    }
  }
  if (zero_rows_out != nullptr) *zero_rows_out = zero_rows;
  if (!c.check_rows_alone) return;
  for (int32_t s = 0; s < num_seqs; ++s) {
    for (int32_t t = q_indptr[s]; t < q_indptr[s + 1]; ++t) {
      const int32_t one[2] = {0, 1};
      std::vector<float> row(int64_t{c.n_heads} * c.d_vo, 555.0f);
      PagedAttentionArgs r = a;
      r.num_seqs = 1;
      r.q_indptr = one;
      r.q = q.data() + int64_t{t} * c.n_heads * c.d_qk;
      r.q_pos = q_pos.data() + t;
      r.kv_indptr = kv_indptr.data() + s * c.n_kv_heads;
      r.kv_last_page_len = last_len.data() + s * c.n_kv_heads;
      r.out = row.data();
      PagedAttention(r);
      for (int64_t i = 0; i < int64_t{c.n_heads} * c.d_vo; ++i) {
        ASSERT_EQ(row[i], out[int64_t{t} * c.n_heads * c.d_vo + i])
            << "seq " << s << " row " << t << " element " << i;
      }
    }
  }
}

TEST(PagedAttentionTest, GqaRatios) {
  for (auto [heads, kv] : {std::pair{4, 4}, {4, 2}, {8, 2}, {6, 2}}) {
    SCOPED_TRACE("heads " + std::to_string(heads) + " kv " +
                 std::to_string(kv));
    Case c;
    c.n_heads = heads;
    c.n_kv_heads = kv;
    c.seed = heads * 10 + kv;
    RunCase(c);
  }
}

// Sliding windows (Gemma's local layers): a query sees keys at positions
// in (q_pos - window, q_pos]; rows whose window holds no cached key (gaps
// from eviction) give zeros.
TEST(PagedAttentionTest, SlidingWindows) {
  for (int32_t w : {1, 2, 5, 16}) {
    SCOPED_TRACE("window " + std::to_string(w));
    Case c;
    c.window = w;
    c.seed = 100 + w;
    RunCase(c);
  }
}

TEST(PagedAttentionTest, PageSizes) {
  for (int32_t ps : {1, 4, 16}) {
    SCOPED_TRACE("page_size " + std::to_string(ps));
    Case c;
    c.page_size = ps;
    c.kv_len = {17, 33, 2, 16};
    c.q_rows = {4, 1, 2, 1};
    c.seed = 100 + ps;
    RunCase(c);
  }
}

TEST(PagedAttentionTest, EqualHeadDims) {
  Case c;
  c.d_qk = 16;
  c.d_vo = 16;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  RunCase(c);
}

TEST(PagedAttentionTest, DecodeOnlyBatch) {
  Case c;
  c.kv_len = {5, 40, 1, 23, 64};
  c.q_rows = {1, 1, 1, 1, 1};
  c.page_size = 16;
  RunCase(c);
}

TEST(PagedAttentionTest, LargePrefillUsesThreads) {
  Case c;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.d_qk = 64;
  c.d_vo = 48;
  c.page_size = 16;
  c.kv_len = {300, 123};
  c.q_rows = {64, 1};
  RunCase(c);
}

// Head dims that are multiples of 8 take the tiled AVX2 kernel
// (kernels/cpu/attention_tiled.h) on CPUs that have it: every GQA ratio,
// page size (including ones that are not multiples of 8), window and row
// mix against the float64 reference, and each row alone equal to the batch.
TEST(PagedAttentionTest, TiledShapes) {
  uint32_t seed = 500;
  for (auto [dq, dv] : {std::pair{16, 24}, {64, 32}, {8, 8}}) {
    for (auto [heads, kv] : {std::pair{4, 4}, {6, 2}, {8, 1}}) {
      for (int32_t ps : {1, 4, 12, 16}) {
        for (int32_t w : {0, 5}) {
          SCOPED_TRACE("d " + std::to_string(dq) + "/" + std::to_string(dv) +
                       " heads " + std::to_string(heads) + "/" +
                       std::to_string(kv) + " page " + std::to_string(ps) +
                       " window " + std::to_string(w));
          Case c;
          c.d_qk = dq;
          c.d_vo = dv;
          c.n_heads = heads;
          c.n_kv_heads = kv;
          c.page_size = ps;
          c.window = w;
          c.kv_len = {40, 3, 17, 1};
          c.q_rows = {29, 2, 1, 1};
          c.seed = ++seed;
          c.check_rows_alone = true;
          int zero_rows = 0;
          RunCase(c, &zero_rows);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(PagedAttentionTest, EarlyPrefillRowsSeeNothing) {
  Case c;
  c.kv_len = {3, 8};
  c.q_rows = {6, 2};
  int zero_rows = 0;
  RunCase(c, &zero_rows);
  EXPECT_GT(zero_rows, 0);
}

TEST(PagedAttentionTest, QueryBeforeEveryTokenGivesZeros) {
  // One token at position 5; a query at position 2 sees nothing.
  const float k[2] = {1.0f, 2.0f};
  const float v[3] = {3.0f, 4.0f, 5.0f};
  const int32_t pos = 5;
  const int64_t slot = 2;
  std::vector<float> k_pool(4 * 2), v_pool(4 * 3);
  std::vector<int32_t> pos_pool(4, 0);
  WriteKv(k, v, &pos, 1, &slot,
          F32Pool(k_pool.data(), v_pool.data(), pos_pool.data(), 1, 2, 3));
  // Slots 0..2 filled (slot 0 and 1 at position 0 would be visible if the
  // page list said so; here last_page_len = 3 includes them).
  const int32_t q_indptr[2] = {0, 2}, q_pos[2] = {-1, 7};
  const int32_t kv_indptr[2] = {0, 1}, kv_indices[1] = {0}, last[1] = {3};
  const float q[4] = {0.5f, -0.5f, 0.5f, -0.5f};
  float out[6];
  std::fill(out, out + 6, 9.0f);
  PagedAttentionArgs a;
  a.num_seqs = 1;
  a.n_heads = 1;
  a.n_kv_heads = 1;
  a.d_qk = 2;
  a.d_vo = 3;
  a.page_size = 4;
  a.q_indptr = q_indptr;
  a.q = q;
  a.q_pos = q_pos;
  a.kv_indptr = kv_indptr;
  a.kv_indices = kv_indices;
  a.kv_last_page_len = last;
  a.k_pool = k_pool.data();
  a.v_pool = v_pool.data();
  a.pos_pool = pos_pool.data();
  a.out = out;
  PagedAttention(a);
  for (int d = 0; d < 3; ++d) EXPECT_EQ(out[d], 0.0f);
  // Row 2 sees slots 0, 1 (zero K/V at position 0) and slot 2.
  const double s2 = (0.5 * 1 - 0.5 * 2);  // scale 1
  const double p2 = std::exp(s2) / (2.0 + std::exp(s2));
  for (int d = 0; d < 3; ++d) EXPECT_NEAR(out[3 + d], p2 * v[d], 1e-6);
}

TEST(WriteKvTest, RoundTrip) {
  const int32_t n = 3, kv = 2, dqk = 5, dvo = 7;
  std::vector<float> k(n * kv * dqk), v(n * kv * dvo);
  std::iota(k.begin(), k.end(), 1.0f);
  std::iota(v.begin(), v.end(), 100.0f);
  const std::vector<int32_t> pos = {10, 11, 20};
  const std::vector<int64_t> slot = {7, 0, 3, 12, 5, 9};
  std::vector<float> kp(16 * dqk, -1.0f), vp(16 * dvo, -1.0f);
  std::vector<int32_t> pp(16, -1);
  WriteKv(k.data(), v.data(), pos.data(), n, slot.data(),
          F32Pool(kp.data(), vp.data(), pp.data(), kv, dqk, dvo));
  for (int32_t t = 0; t < n; ++t) {
    for (int32_t h = 0; h < kv; ++h) {
      const int64_t s = slot[t * kv + h];
      EXPECT_EQ(pp[s], pos[t]);
      for (int i = 0; i < dqk; ++i) {
        EXPECT_EQ(kp[s * dqk + i], k[(t * kv + h) * dqk + i]);
      }
      for (int i = 0; i < dvo; ++i) {
        EXPECT_EQ(vp[s * dvo + i], v[(t * kv + h) * dvo + i]);
      }
    }
  }
  int untouched = 0;
  for (int32_t p : pp) untouched += p == -1;
  EXPECT_EQ(untouched, 16 - n * kv);
}

}  // namespace
}  // namespace latentkv::kernels
