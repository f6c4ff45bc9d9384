// The parity harness: every op of every registered backend against a scalar
// float64 reference, on awkward shapes (batch 17, 97-token contexts, page
// size 3, GQA, d_qk != d_vo), every weight dtype and every KV dtype. Inputs
// and outputs move through the backend's own buffers (Alloc, CopyIn,
// CopyOut), so a device backend joins by registering itself.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "kernels/reference_for_tests.h"

namespace latentkv::kernels {
namespace {

using ::latentkv::kernels::testing::RandomVec;
using ::latentkv::kernels::testing::Store;
using ::latentkv::kernels::testing::StoredWeights;

class BackendParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto b = CreateBackend(GetParam());
    ASSERT_TRUE(b.ok()) << b.status();
    be_ = std::move(*b);
  }
  // A device copy of `host`.
  template <typename T>
  DeviceBuffer Up(const std::vector<T>& host) {
    const size_t bytes = std::max<size_t>(1, host.size() * sizeof(T));
    DeviceBuffer d = *be_->Alloc(bytes, "test input");
    if (!host.empty()) be_->CopyIn(d.data(), host.data(), bytes);
    return d;
  }
  DeviceBuffer Zeros(size_t bytes) {
    DeviceBuffer d = *be_->Alloc(std::max<size_t>(1, bytes), "test output");
    be_->Fill(d.data(), 0, std::max<size_t>(1, bytes));
    return d;
  }
  template <typename T>
  std::vector<T> Down(const DeviceBuffer& d, size_t n) {
    std::vector<T> host(n);
    if (n > 0) be_->CopyOut(host.data(), d.data(), n * sizeof(T));
    EXPECT_TRUE(be_->Synchronize().ok());
    return host;
  }

  std::unique_ptr<Backend> be_;
};

// |got - want| <= tol * (1 + |want|) elementwise.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want,
                 double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(got[i] - want[i]), tol * (1 + std::abs(want[i])))
        << what << " at " << i << ": " << got[i] << " vs " << want[i];
  }
}

// Every weight dtype the backend says it multiplies (SupportsWeights; the
// CPU: all of them, the k-quants on 512 columns, two super-blocks).
TEST_P(BackendParityTest, MatMulEveryWeightDtype) {
  const int64_t rows = 33;
  EXPECT_TRUE(be_->SupportsWeights(DType::kQ8_0));
  if (GetParam() == "cpu") EXPECT_TRUE(be_->SupportsWeights(DType::kQ4_K));
  for (DType dt :
       {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_0,
        DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ2_K, DType::kQ3_K,
        DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (!be_->SupportsWeights(dt)) continue;
    const int64_t cols = IsKQuant(dt) ? 512 : 96;
    const std::vector<float> w = RandomVec(rows * cols, 1);
    const StoredWeights s = Store(w, dt);
    DeviceBuffer dw = Up(s.bytes);
    for (int64_t n : {1, 3, 8, 9, 17, 64, 130}) {
      const std::vector<float> x = RandomVec(n * cols, 2 + n);
      DeviceBuffer dx = Up(x);
      DeviceBuffer dy = Zeros(n * rows * sizeof(float));
      be_->MatMul(dx.as<float>(), n, WeightView{dw.data(), dt, rows, cols},
                  dy.as<float>());
      ExpectClose(Down<float>(dy, n * rows),
                  testing::RefMatMul(x, n, s.values, rows, cols), 2e-5,
                  std::string(DTypeName(dt)) + " n=" + std::to_string(n));
    }
  }
}

// Columns that are not a multiple of 8 (no vector loads, no cuBLASLt).
TEST_P(BackendParityTest, MatMulOddColumns) {
  const int64_t rows = 19, cols = 97;
  const std::vector<float> w = RandomVec(rows * cols, 31);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    const StoredWeights s = Store(w, dt);
    DeviceBuffer dw = Up(s.bytes);
    for (int64_t n : {1, 5, 9, 70}) {
      const std::vector<float> x = RandomVec(n * cols, 40 + n);
      DeviceBuffer dx = Up(x);
      DeviceBuffer dy = Zeros(n * rows * sizeof(float));
      be_->MatMul(dx.as<float>(), n, WeightView{dw.data(), dt, rows, cols},
                  dy.as<float>());
      ExpectClose(Down<float>(dy, n * rows),
                  testing::RefMatMul(x, n, s.values, rows, cols), 2e-5,
                  std::string(DTypeName(dt)) + " n=" + std::to_string(n));
    }
  }
}

TEST_P(BackendParityTest, MatMulGroupSharesTheInput) {
  const int64_t n = 17, cols = 64;
  const std::vector<float> x = RandomVec(n * cols, 3);
  DeviceBuffer dx = Up(x);
  const int64_t rows[3] = {24, 8, 40};
  std::vector<DeviceBuffer> dw, dy;
  std::vector<StoredWeights> stored;
  std::vector<WeightView> views;
  std::vector<float*> ys;
  for (int i = 0; i < 3; ++i) {
    stored.push_back(Store(RandomVec(rows[i] * cols, 10 + i), DType::kBF16));
    dw.push_back(Up(stored.back().bytes));
    dy.push_back(Zeros(n * rows[i] * sizeof(float)));
    views.push_back(WeightView{dw.back().data(), DType::kBF16, rows[i], cols});
    ys.push_back(dy.back().as<float>());
  }
  be_->MatMulGroup(dx.as<float>(), n, views.data(), ys.data(), 3);
  for (int i = 0; i < 3; ++i) {
    ExpectClose(Down<float>(dy[i], n * rows[i]),
                testing::RefMatMul(x, n, stored[i].values, rows[i], cols), 2e-5,
                "group " + std::to_string(i));
  }
}

TEST_P(BackendParityTest, ElementwiseOps) {
  const int64_t n = 17, dim = 97;
  const std::vector<float> x = RandomVec(n * dim, 4, -3, 3);
  const std::vector<float> g = RandomVec(dim, 5);
  DeviceBuffer dx = Up(x), dg = Up(g), dy = Zeros(x.size() * 4);
  be_->RmsNorm(dx.as<float>(), dg.as<float>(), n, dim, 1e-5f, dy.as<float>());
  std::vector<double> want(x.size());
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i)
      ss += double{x[t * dim + i]} * x[t * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) {
      want[t * dim + i] = x[t * dim + i] * inv * g[i];
    }
  }
  ExpectClose(Down<float>(dy, x.size()), want, 1e-5, "RmsNorm");

  const std::vector<float> u = RandomVec(x.size(), 6, -3, 3);
  DeviceBuffer du = Up(u), ds = Zeros(x.size() * 4);
  be_->SwiGlu(dx.as<float>(), du.as<float>(), x.size(), ds.as<float>());
  for (size_t i = 0; i < x.size(); ++i) {
    want[i] = x[i] / (1.0 + std::exp(-double{x[i]})) * u[i];
  }
  ExpectClose(Down<float>(ds, x.size()), want, 1e-5, "SwiGlu");

  be_->GeluTanhGlu(dx.as<float>(), du.as<float>(), x.size(), ds.as<float>());
  for (size_t i = 0; i < x.size(); ++i) {
    const double g = x[i];
    want[i] =
        0.5 * g *
        (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) *
        u[i];
  }
  ExpectClose(Down<float>(ds, x.size()), want, 1e-5, "GeluTanhGlu");

  be_->Scale(ds.as<float>(), x.size(), -2.5f);
  for (size_t i = 0; i < x.size(); ++i) want[i] *= -2.5;
  ExpectClose(Down<float>(ds, x.size()), want, 1e-5, "Scale");

  // Rows of `dim` plus the bias vector g.
  be_->AddRowBias(ds.as<float>(), dg.as<float>(), n, dim);
  for (size_t i = 0; i < x.size(); ++i) want[i] += g[i % dim];
  ExpectClose(Down<float>(ds, x.size()), want, 1e-5, "AddRowBias");

  be_->AddInPlace(du.as<float>(), dx.as<float>(), x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = double{u[i]} + x[i];
  ExpectClose(Down<float>(du, x.size()), want, 1e-6, "AddInPlace");
}

// Per-head maps (the KV-Latent maps after the q/k norms) against float64:
// prefill-sized and one-row batches, din above and below the block size.
TEST_P(BackendParityTest, MapHeadsAppliesEachHeadsOwnMatrix) {
  for (const auto& [n, heads, din, dout] :
       {std::array<int64_t, 4>{1, 4, 256, 128},
        {37, 3, 40, 24},
        {5, 1, 300, 7}}) {
    SCOPED_TRACE(::testing::PrintToString(std::array{n, heads, din, dout}));
    const std::vector<float> x = RandomVec(n * heads * din, 21, -2, 2);
    const std::vector<float> m = RandomVec(heads * dout * din, 22, -1, 1);
    DeviceBuffer dx = Up(x), dm = Up(m), dy = Zeros(n * heads * dout * 4);
    be_->MapHeads(dx.as<float>(), n, heads, din, dm.as<float>(), dout,
                  dy.as<float>());
    std::vector<double> want(n * heads * dout, 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t o = 0; o < dout; ++o) {
          double s = 0;
          for (int64_t i = 0; i < din; ++i) {
            s += double{m[(h * dout + o) * din + i]} *
                 x[(t * heads + h) * din + i];
          }
          want[(t * heads + h) * dout + o] = s;
        }
    ExpectClose(Down<float>(dy, want.size()), want, 2e-5, "MapHeads");
  }
}

TEST_P(BackendParityTest, GatherRowsPicksRowsInOrder) {
  const int64_t dim = 97, rows = 17;
  const std::vector<float> x = RandomVec(rows * dim, 12);
  const std::vector<int32_t> pick = {16, 0, 3, 3, 9};
  DeviceBuffer dx = Up(x), dp = Up(pick), dy = Zeros(pick.size() * dim * 4);
  be_->GatherRows(dx.as<float>(), dim, dp.as<int32_t>(), 5, dy.as<float>());
  std::vector<double> want;
  for (int32_t r : pick) {
    for (int64_t i = 0; i < dim; ++i) want.push_back(x[r * dim + i]);
  }
  ExpectClose(Down<float>(dy, want.size()), want, 0, "GatherRows");
}

// The greedy choice against a reference written from its definition: the
// largest value, the lowest index among equals, NaN never, 0 when nothing
// exceeds -inf. Rows of a 49,152-token vocabulary (SmolLM2's) and edge rows.
TEST_P(BackendParityTest, ArgmaxRowsIsTheGreedyChoice) {
  const int64_t cols = 49152;
  std::vector<std::vector<float>> rows;
  for (int r = 0; r < 5; ++r) rows.push_back(RandomVec(cols, 60 + r, -8, 8));
  rows[1][777] = 9.0f;  // ties: the lower index wins
  rows[1][40000] = 9.0f;
  rows[2][5] = std::nanf("");  // NaN ignored, even first
  rows[2][0] = std::nanf("");
  rows[2][cols - 1] = 8.5f;
  rows.push_back(std::vector<float>(cols, -INFINITY));  // nothing above -inf
  rows.back()[3] = std::nanf("");
  rows.push_back(std::vector<float>(cols, 1.0f));  // all equal: index 0
  rows.push_back(std::vector<float>(cols, 0.0f));
  rows.back()[31] = INFINITY;  // +inf wins
  rows.back()[63] = INFINITY;
  std::vector<float> flat;
  std::vector<int32_t> want;
  for (const auto& r : rows) {
    flat.insert(flat.end(), r.begin(), r.end());
    int32_t best = -1;
    for (int64_t i = 0; i < cols; ++i) {
      if (std::isnan(r[i]) || r[i] == -INFINITY) continue;
      if (best < 0 || r[i] > r[best]) best = static_cast<int32_t>(i);
    }
    want.push_back(best < 0 ? 0 : best);
  }
  DeviceBuffer dx = Up(flat), dout = Zeros(rows.size() * 4);
  be_->ArgmaxRows(dx.as<float>(), static_cast<int64_t>(rows.size()), cols,
                  dout.as<int32_t>());
  EXPECT_EQ(Down<int32_t>(dout, rows.size()), want);
  EXPECT_EQ(want[1], 777);
  EXPECT_EQ(want[2], cols - 1);
  EXPECT_EQ(want[7], 31);
}

TEST_P(BackendParityTest, RopeWithFrequencyAwareTable) {
  const int64_t n = 17, heads = 3, d = 12;
  std::vector<float> inv(d / 2);
  RopeInvFreqFrequencyAware(d, 10000.0, inv.data());
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>(t * t * 7 % 97);
  const std::vector<float> x = RandomVec(n * heads * d, 7);
  DeviceBuffer dx = Up(x), dp = Up(pos), df = Up(inv);
  be_->ApplyRope(dx.as<float>(), n, heads, d, d, dp.as<int32_t>(),
                 df.as<float>());
  std::vector<double> want(x.size());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* r = x.data() + (t * heads + h) * d;
      for (int64_t j = 0; j < d / 2; ++j) {
        // The table itself: base^(-e_j), e from the KV-Latent definition.
        const double e = j < d / 4 ? (d / 4.0 + 2.0 * j) / d
                                   : (3.0 * d / 4.0 + (j - d / 4.0)) / d;
        ASSERT_NEAR(inv[j], std::pow(10000.0, -e),
                    1e-6 * std::pow(10000.0, -e));
        const double a = static_cast<double>(pos[t]) * inv[j];
        const size_t o = (t * heads + h) * d;
        want[o + j] = r[j] * std::cos(a) - r[j + d / 2] * std::sin(a);
        want[o + j + d / 2] = r[j] * std::sin(a) + r[j + d / 2] * std::cos(a);
      }
    }
  }
  ExpectClose(Down<float>(dx, x.size()), want, 2e-5, "ApplyRope");
}

// Partial rotary: 6 of 16 channels rotate; the other 10 (position-free, as
// in a KV-Latent NoPE head) must come back unchanged on every backend.
TEST_P(BackendParityTest, PartialRopeLeavesPositionFreeChannels) {
  const int64_t n = 9, heads = 2, d = 16, r = 6;
  std::vector<float> inv(r / 2);
  RopeInvFreqStandard(r, 500.0, inv.data());
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>(t * 37 % 211);
  const std::vector<float> x = RandomVec(n * heads * d, 19);
  DeviceBuffer dx = Up(x), dp = Up(pos), df = Up(inv);
  be_->ApplyRope(dx.as<float>(), n, heads, d, r, dp.as<int32_t>(),
                 df.as<float>());
  std::vector<double> want(x.begin(), x.end());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const size_t o = (t * heads + h) * d;
      for (int64_t j = 0; j < r / 2; ++j) {
        const double a = static_cast<double>(pos[t]) * inv[j];
        want[o + j] = x[o + j] * std::cos(a) - x[o + j + r / 2] * std::sin(a);
        want[o + j + r / 2] =
            x[o + j] * std::sin(a) + x[o + j + r / 2] * std::cos(a);
      }
    }
  }
  ExpectClose(Down<float>(dx, x.size()), want, 2e-5, "ApplyRope partial");
}

TEST_P(BackendParityTest, EmbedEveryTableDtype) {
  const int64_t vocab = 50, dim = 64, n = 17;
  const std::vector<float> table = RandomVec(vocab * dim, 8);
  std::vector<int32_t> tok(n);
  for (int64_t t = 0; t < n; ++t)
    tok[t] = static_cast<int32_t>((t * 13) % vocab);
  DeviceBuffer dt = Up(tok);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kQ8_0, DType::kQ4_1,
                      DType::kQ5_0, DType::kQ5_1}) {
    if (!be_->SupportsWeights(dtype)) continue;
    const StoredWeights s = Store(table, dtype);
    DeviceBuffer dw = Up(s.bytes), dy = Zeros(n * dim * 4);
    be_->Embed(WeightView{dw.data(), dtype, vocab, dim}, dt.as<int32_t>(), n,
               dy.as<float>());
    std::vector<double> want(n * dim);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < dim; ++i)
        want[t * dim + i] = s.values[tok[t] * dim + i];
    }
    ExpectClose(Down<float>(dy, n * dim), want, 0,
                std::string(DTypeName(dtype)));
  }
}

// One sequence's cached tokens of one KV head: positions ascending with gaps
// (evictions), in pages of the pool.
struct HeadCache {
  std::vector<int32_t> pos;
  std::vector<float> k, v;  // [len, d]
  std::vector<int32_t> pages;
};

// A device copy of `host` on `be`.
template <typename T>
DeviceBuffer Up(Backend& be, const std::vector<T>& host) {
  const size_t bytes = std::max<size_t>(1, host.size() * sizeof(T));
  DeviceBuffer d = *be.Alloc(bytes, "test input");
  if (!host.empty()) be.CopyIn(d.data(), host.data(), bytes);
  return d;
}

// Stored-then-read value of x in a KV dtype with scale s (the conversions of
// common/dtype.h, tested against the formats' definitions).
double KvRound(float x, DType dt, float s) {
  switch (dt) {
    case DType::kBF16:
      return Bf16ToF32(F32ToBf16(x));
    case DType::kF16:
      return F16ToF32(F32ToF16(x));
    case DType::kF8E4M3:
      return double{F8E4M3ToF32(F32ToF8E4M3(x * (1.0f / s)))} * s;
    default:
      return x;
  }
}

class KvParityTest
    : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// WriteKv into shuffled pages of size 3, then PagedAttention of 17
// sequences (GQA 4 query heads on 2 KV heads, d_qk 8, d_vo 6, contexts up
// to 97 tokens with evicted gaps, 1-4 query rows each) against a float64
// softmax over the stored values; SnapKV window scores from the pool,
// Gather/Scatter and MoveKvSlots on the same pool against host models.
TEST_P(KvParityTest, WriteAttendMoveGatherScatter) {
  const auto& [name, dt] = GetParam();
  auto made = CreateBackend(name);
  ASSERT_TRUE(made.ok());
  Backend& be = **made;
  const int32_t seqs = 17, nh = 4, nkv = 2, dqk = 8, dvo = 6, ps = 3;
  const int32_t group = nh / nkv;
  std::mt19937 rng(21);
  const std::vector<float> k_scale = {0.011f, 0.007f},
                           v_scale = {0.009f, 0.013f};
  // Contexts and pages.
  std::vector<std::vector<HeadCache>> cache(seqs, std::vector<HeadCache>(nkv));
  int32_t pages = 0;
  std::vector<int32_t> q_len(seqs), last_pos(seqs);
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t ctx = std::uniform_int_distribution<int>(1, 97)(rng);
    q_len[s] = std::uniform_int_distribution<int>(1, 4)(rng);
    last_pos[s] = ctx - 1;
    for (int32_t h = 0; h < nkv; ++h) {
      HeadCache& hc = cache[s][h];
      for (int32_t p = 0; p < ctx; ++p) {
        // Evicted gaps, but the latest token always stays.
        if (p == ctx - 1 || std::bernoulli_distribution(0.8)(rng)) {
          hc.pos.push_back(p);
        }
      }
      const int64_t len = static_cast<int64_t>(hc.pos.size());
      hc.k = RandomVec(len * dqk, rng(), -2, 2);
      hc.v = RandomVec(len * dvo, rng(), -2, 2);
      for (int64_t i = 0; i < (len + ps - 1) / ps; ++i)
        hc.pages.push_back(pages++);
    }
  }
  // Shuffle page ids so lists are not contiguous.
  std::vector<int32_t> perm(pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (auto& sc : cache) {
    for (HeadCache& hc : sc) {
      for (int32_t& p : hc.pages) p = perm[p];
    }
  }
  const int64_t esz = DTypeSize(dt), slots = int64_t{pages} * ps;
  DeviceBuffer kp = *be.Alloc(slots * dqk * esz, "k"),
               vp = *be.Alloc(slots * dvo * esz, "v"),
               pp = *be.Alloc(slots * 4, "pos");
  DeviceBuffer ks = *be.Alloc(8, "ks"), vs = *be.Alloc(8, "vs");
  be.CopyIn(ks.data(), k_scale.data(), 8);
  be.CopyIn(vs.data(), v_scale.data(), 8);
  KvPoolView pool{dt,
                  ps,
                  nkv,
                  dqk,
                  dvo,
                  kp.data(),
                  vp.data(),
                  pp.as<int32_t>(),
                  dt == DType::kF8E4M3 ? ks.as<float>() : nullptr,
                  dt == DType::kF8E4M3 ? vs.as<float>() : nullptr};
  const float ksc[2] = {pool.k_scale ? k_scale[0] : 1,
                        pool.k_scale ? k_scale[1] : 1};
  const float vsc[2] = {pool.v_scale ? v_scale[0] : 1,
                        pool.v_scale ? v_scale[1] : 1};
  // Write every token of each (sequence, KV head): heads hold different
  // tokens here (evictions), so each call writes one head's rows through a
  // one-head view of the pool whose scales are that head's.
  for (int32_t s = 0; s < seqs; ++s) {
    for (int32_t h = 0; h < nkv; ++h) {
      const HeadCache& hc = cache[s][h];
      const int64_t len = static_cast<int64_t>(hc.pos.size());
      KvPoolView one = pool;
      one.n_kv_heads = 1;
      if (one.k_scale != nullptr) {
        one.k_scale = ks.as<float>() + h;
        one.v_scale = vs.as<float>() + h;
      }
      std::vector<float> k1(len * dqk), v1(len * dvo);
      std::vector<int64_t> s1(len);
      for (int64_t i = 0; i < len; ++i) {
        std::copy_n(hc.k.data() + i * dqk, dqk, k1.data() + i * dqk);
        std::copy_n(hc.v.data() + i * dvo, dvo, v1.data() + i * dvo);
        s1[i] = int64_t{hc.pages[i / ps]} * ps + i % ps;
      }
      DeviceBuffer dk = Up(be, k1), dv = Up(be, v1), dpos = Up(be, hc.pos),
                   dslot = Up(be, s1);
      be.WriteKv(dk.as<float>(), dv.as<float>(), dpos.as<int32_t>(), len,
                 dslot.as<int64_t>(), one);
    }
  }
  // Queries and the ragged description.
  std::vector<int32_t> q_indptr = {0}, q_pos, kv_indptr = {0}, kv_indices, last;
  for (int32_t s = 0; s < seqs; ++s) {
    for (int32_t r = 0; r < q_len[s]; ++r) {
      // The last row at the newest position, earlier rows before it (a
      // prefill chunk), so some rows see only part of the cache.
      q_pos.push_back(last_pos[s] - (q_len[s] - 1 - r));
    }
    q_indptr.push_back(static_cast<int32_t>(q_pos.size()));
    for (int32_t h = 0; h < nkv; ++h) {
      const HeadCache& hc = cache[s][h];
      for (int32_t p : hc.pages) kv_indices.push_back(p);
      kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
      const int32_t len = static_cast<int32_t>(hc.pos.size());
      last.push_back(len - (len - 1) / ps * ps);
    }
  }
  const int64_t total_q = static_cast<int64_t>(q_pos.size());
  const std::vector<float> q = RandomVec(total_q * nh * dqk, 31, -1, 1);
  DeviceBuffer dq = Up(be, q), dqi = Up(be, q_indptr), dqp = Up(be, q_pos),
               dki = Up(be, kv_indptr), dkx = Up(be, kv_indices),
               dl = Up(be, last);
  DeviceBuffer dout = *be.Alloc(total_q * nh * dvo * 4, "out");
  PagedAttentionArgs a;
  a.SetPool(pool);
  a.num_seqs = seqs;
  a.n_heads = nh;
  a.scale = 1.0f / std::sqrt(static_cast<float>(dqk));
  a.q_indptr = dqi.as<int32_t>();
  a.q = dq.as<float>();
  a.q_pos = dqp.as<int32_t>();
  a.kv_indptr = dki.as<int32_t>();
  a.kv_indices = dkx.as<int32_t>();
  a.kv_last_page_len = dl.as<int32_t>();
  a.out = dout.as<float>();
  be.PagedAttention(a);
  std::vector<float> out(total_q * nh * dvo);
  be.CopyOut(out.data(), dout.data(), out.size() * 4);
  ASSERT_TRUE(be.Synchronize().ok());
  // The float64 softmax over what each row sees (window 0: every key at or
  // before the row's position).
  auto reference = [&](int32_t window) {
    std::vector<double> want(out.size(), 0.0);
    int64_t row = 0;
    for (int32_t s = 0; s < seqs; ++s) {
      for (int32_t r = 0; r < q_len[s]; ++r, ++row) {
        for (int32_t h = 0; h < nh; ++h) {
          const HeadCache& hc = cache[s][h / group];
          const float kscale = ksc[h / group], vscale = vsc[h / group];
          const float* qr = q.data() + (row * nh + h) * dqk;
          std::vector<double> logit;
          std::vector<int64_t> seen;
          for (size_t i = 0; i < hc.pos.size(); ++i) {
            if (hc.pos[i] > q_pos[row]) continue;
            if (window > 0 && q_pos[row] - hc.pos[i] >= window) continue;
            double dot = 0;
            for (int32_t j = 0; j < dqk; ++j) {
              dot += qr[j] * KvRound(hc.k[i * dqk + j], dt, kscale);
            }
            logit.push_back(dot / std::sqrt(double{dqk}));
            seen.push_back(static_cast<int64_t>(i));
          }
          if (seen.empty()) continue;
          const double mx = *std::max_element(logit.begin(), logit.end());
          double den = 0;
          for (double& l : logit) den += (l = std::exp(l - mx));
          for (size_t m = 0; m < seen.size(); ++m) {
            for (int32_t j = 0; j < dvo; ++j) {
              want[(row * nh + h) * dvo + j] +=
                  logit[m] / den * KvRound(hc.v[seen[m] * dvo + j], dt, vscale);
            }
          }
        }
      }
    }
    return want;
  };
  ExpectClose(out, reference(0), 2e-5,
              "PagedAttention " + std::string(DTypeName(dt)));
  // Sliding windows (Gemma's local layers), narrower than most contexts.
  for (int32_t window : {1, 9}) {
    a.window = window;
    be.PagedAttention(a);
    be.CopyOut(out.data(), dout.data(), out.size() * 4);
    ASSERT_TRUE(be.Synchronize().ok());
    ExpectClose(out, reference(window), 2e-5,
                "PagedAttention window " + std::to_string(window) + " " +
                    std::string(DTypeName(dt)));
  }
  a.window = 0;

  // SnapKV window scores of sequence 2 head 1's slots, read from the pool:
  // 5 window queries of the 2 query heads of that KV head, the first ones
  // before part of the cache.
  {
    const HeadCache& sc = cache[2][1];
    const int64_t n = static_cast<int64_t>(sc.pos.size());
    std::vector<int64_t> sl(n);
    for (int64_t i = 0; i < n; ++i) {
      sl[i] = int64_t{sc.pages[i / ps]} * ps + i % ps;
    }
    const int32_t n_w = 5;
    std::vector<int32_t> wpos(n_w);
    for (int32_t w = 0; w < n_w; ++w) wpos[w] = last_pos[2] - 2 * (n_w - 1 - w);
    const std::vector<float> wq = RandomVec(n_w * group * dqk, 41, -1, 1);
    DeviceBuffer dsl = Up(be, sl), dwq = Up(be, wq), dwp = Up(be, wpos);
    DeviceBuffer dsc = *be.Alloc(group * n * 4 + 4, "scores"),
                 dkp = *be.Alloc(n * 4 + 4, "k_pos");
    be.WindowScores(pool, 1, dsl.as<int64_t>(), n, dwq.as<float>(),
                    dwp.as<int32_t>(), n_w, group, 0.3f, dsc.as<float>(),
                    dkp.as<int32_t>());
    std::vector<float> scores(group * n);
    std::vector<int32_t> kpos(n);
    be.CopyOut(scores.data(), dsc.data(), scores.size() * 4);
    be.CopyOut(kpos.data(), dkp.data(), kpos.size() * 4);
    ASSERT_TRUE(be.Synchronize().ok());
    EXPECT_EQ(kpos, sc.pos);
    std::vector<double> want_scores(group * n, 0.0);
    for (int32_t w = 0; w < n_w; ++w) {
      for (int32_t g = 0; g < group; ++g) {
        std::vector<double> l(n, 0.0);
        double mx = -1e300, den = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (sc.pos[i] > wpos[w]) continue;
          double dot = 0;
          for (int32_t j = 0; j < dqk; ++j) {
            dot += wq[(w * group + g) * dqk + j] *
                   KvRound(sc.k[i * dqk + j], dt, ksc[1]);
          }
          l[i] = 0.3 * dot;
          mx = std::max(mx, l[i]);
        }
        for (int64_t i = 0; i < n; ++i) {
          if (sc.pos[i] <= wpos[w]) den += std::exp(l[i] - mx);
        }
        for (int64_t i = 0; i < n; ++i) {
          if (sc.pos[i] <= wpos[w]) {
            want_scores[g * n + i] += std::exp(l[i] - mx) / den;
          }
        }
      }
    }
    ExpectClose(scores, want_scores, 1e-5, "WindowScores");
  }

  // Gather the rows of sequence 0 head 1 and check their bytes.
  const HeadCache& hc = cache[0][1];
  const int64_t len = static_cast<int64_t>(hc.pos.size());
  std::vector<int64_t> gslots(len);
  for (int64_t i = 0; i < len; ++i)
    gslots[i] = int64_t{hc.pages[i / ps]} * ps + i % ps;
  const int64_t rb = KvRowBytes(dt, dqk, dvo);
  ASSERT_EQ(rb, 4 + esz * (dqk + dvo));
  DeviceBuffer dgs = Up(be, gslots), drows = *be.Alloc(len * rb, "rows");
  be.GatherKvRows(pool, dgs.as<int64_t>(), len, drows.data());
  std::vector<uint8_t> rows(len * rb);
  be.CopyOut(rows.data(), drows.data(), rows.size());
  ASSERT_TRUE(be.Synchronize().ok());
  for (int64_t i = 0; i < len; ++i) {
    const uint8_t* r = rows.data() + i * rb;
    int32_t p;
    std::memcpy(&p, r, 4);
    ASSERT_EQ(p, hc.pos[i]);
    for (int32_t j = 0; j < dqk + dvo; ++j) {
      const bool is_k = j < dqk;
      const float x = is_k ? hc.k[i * dqk + j] : hc.v[i * dvo + j - dqk];
      uint8_t want_bytes[4];
      if (dt == DType::kF8E4M3) {
        want_bytes[0] = F32ToF8E4M3(x * (1.0f / (is_k ? ksc[1] : vsc[1])));
      } else {
        ConvertFromF32(&x, 1, dt, want_bytes);
      }
      ASSERT_EQ(std::memcmp(r + 4 + j * esz, want_bytes, esz), 0)
          << "row " << i << " value " << j;
    }
  }
  // Scatter them back in reverse slot order, then compact with moves: the
  // host model says where each row must end up.
  std::vector<int64_t> rev(gslots.rbegin(), gslots.rend());
  DeviceBuffer drev = Up(be, rev);
  be.ScatterKvRows(pool, drev.as<int64_t>(), len, drows.data());
  // Row i now lives in slot rev[i] = gslots[len - 1 - i]. Keep every other
  // row, compacting forward into gslots[0..]: a list whose sources include
  // earlier destinations.
  std::vector<int64_t> src, dst;
  std::vector<int64_t> expect_row;  // row index expected at gslots[m]
  for (int64_t m = 0, i = 0; i < len; i += 2, ++m) {
    src.push_back(rev[i]);
    dst.push_back(gslots[m]);
    expect_row.push_back(i);
  }
  DeviceBuffer dsrc = Up(be, src), ddst = Up(be, dst);
  be.MoveKvSlots(pool, dsrc.as<int64_t>(), ddst.as<int64_t>(),
                 static_cast<int64_t>(src.size()));
  be.GatherKvRows(pool, ddst.as<int64_t>(), static_cast<int64_t>(dst.size()),
                  drows.data());
  std::vector<uint8_t> moved(dst.size() * rb);
  be.CopyOut(moved.data(), drows.data(), moved.size());
  ASSERT_TRUE(be.Synchronize().ok());
  for (size_t m = 0; m < dst.size(); ++m) {
    ASSERT_EQ(std::memcmp(moved.data() + m * rb,
                          rows.data() + expect_row[m] * rb, rb),
              0)
        << "moved row " << m;
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, BackendParityTest,
                         ::testing::ValuesIn(RegisteredBackends()),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(
    AllBackendsAndKvDtypes, KvParityTest,
    ::testing::Combine(::testing::ValuesIn(RegisteredBackends()),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16,
                                         DType::kF8E4M3)),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" +
             std::string(DTypeName(std::get<1>(info.param)));
    });

}  // namespace
}  // namespace latentkv::kernels
