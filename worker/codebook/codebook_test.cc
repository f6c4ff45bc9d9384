#include "worker/codebook/codebook.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// Helpers (double precision, independent of the library's float arithmetic)

double NormD(const float* x, int32_t d) {
  double s = 0;
  for (int32_t i = 0; i < d; ++i) s += double{x[i]} * x[i];
  return std::sqrt(s);
}

double CosD(const float* a, const float* b, int32_t d) {
  double dot = 0;
  for (int32_t i = 0; i < d; ++i) dot += double{a[i]} * b[i];
  return dot / (NormD(a, d) * NormD(b, d));
}

std::vector<float> Unit(const float* x, int32_t d) {
  const double n = NormD(x, d);
  std::vector<float> u(d);
  for (int32_t i = 0; i < d; ++i) u[i] = static_cast<float>(x[i] / n);
  return u;
}

// A 2-D vector of length m at `deg` degrees.
std::vector<float> Polar(double deg, double m) {
  const double a = deg * std::numbers::pi / 180.0;
  return {static_cast<float>(m * std::cos(a)),
          static_cast<float>(m * std::sin(a))};
}

std::vector<float> Concat(const std::vector<std::vector<float>>& rows) {
  std::vector<float> out;
  for (const auto& r : rows) out.insert(out.end(), r.begin(), r.end());
  return out;
}

// n rows of d drawn around `k` random centres with per-row noise levels from
// tight to loose and random magnitudes, so cosines spread over [-1, 1].
std::vector<float> ClusteredData(int64_t n, int32_t d, int32_t k,
                                 uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> pick(0, k - 1);
  std::uniform_real_distribution<float> scale(0.2f, 4.0f);
  const float sigmas[] = {0.02f, 0.1f, 0.3f, 1.0f};
  std::vector<float> centres(static_cast<size_t>(k) * d);
  for (float& c : centres) c = normal(rng);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (int64_t t = 0; t < n; ++t) {
    const float* c = centres.data() + int64_t{pick(rng)} * d;
    const float sigma = sigmas[t % 4];
    const float m = scale(rng);
    for (int32_t i = 0; i < d; ++i) {
      x[t * d + i] = m * (c[i] + sigma * normal(rng));
    }
  }
  return x;
}

// Checks what every codebook from Build must satisfy: magnitudes are the
// norms, codewords are unit, indices are in range, every nonzero row has
// cos > theta with its codeword (unless theta >= 1, where rows reconstruct
// exactly), the relative error is within sqrt(2 - 2 theta), zero rows
// reconstruct to zero.
void ExpectBuildInvariants(const std::vector<float>& x, int64_t n, int32_t d,
                           float theta, const Codebook& cb,
                           const std::vector<int32_t>& index,
                           const std::vector<float>& magnitude) {
  ASSERT_EQ(cb.d(), d);
  ASSERT_EQ(index.size(), static_cast<size_t>(n));
  ASSERT_EQ(magnitude.size(), static_cast<size_t>(n));
  ASSERT_EQ(cb.codewords().size(), static_cast<size_t>(cb.num_codewords()) * d);
  for (int32_t c = 0; c < cb.num_codewords(); ++c) {
    EXPECT_NEAR(NormD(cb.codeword(c), d), 1.0, 1e-6) << "codeword " << c;
  }
  std::vector<float> rec(static_cast<size_t>(n) * d);
  cb.Reconstruct(index.data(), magnitude.data(), n, rec.data());
  const double bound = std::sqrt(std::max(0.0, 2.0 - 2.0 * theta));
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x.data() + t * d;
    const double norm = NormD(row, d);
    ASSERT_GE(index[t], 0);
    ASSERT_LT(index[t], cb.num_codewords());
    EXPECT_NEAR(magnitude[t], norm, 1e-6 * norm) << "row " << t;
    double err = 0;
    for (int32_t i = 0; i < d; ++i) {
      const double e = double{row[i]} - rec[t * d + i];
      err += e * e;
    }
    err = std::sqrt(err);
    if (norm == 0) {
      EXPECT_EQ(err, 0.0) << "zero row " << t;
      continue;
    }
    if (theta < 1) {
      EXPECT_GT(CosD(row, cb.codeword(index[t]), d), theta - 1e-6)
          << "row " << t;
      EXPECT_LE(err / norm, bound + 1e-5) << "row " << t;
    } else {
      EXPECT_LE(err / norm, 1e-6) << "row " << t;
    }
  }
}

// The greedy rule, written out directly and slowly (O(n^3)), in double:
// returns the leader row of each codeword in order and each row's codeword.
struct Reference {
  std::vector<int32_t> leaders;
  std::vector<int32_t> index;
};

Reference ReferenceGreedy(const std::vector<float>& x, int32_t n, int32_t d,
                          double theta) {
  std::vector<bool> nonzero(n);
  for (int32_t i = 0; i < n; ++i) nonzero[i] = NormD(&x[i * d], d) > 0;
  auto adjacent = [&](int32_t i, int32_t j) {
    return i != j && nonzero[i] && nonzero[j] &&
           CosD(&x[i * d], &x[j * d], d) > theta;
  };
  Reference ref;
  ref.index.assign(n, 0);
  std::vector<bool> done(n);
  for (int32_t i = 0; i < n; ++i) done[i] = !nonzero[i];
  while (true) {
    int32_t best = -1, best_degree = -1;
    for (int32_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      int32_t degree = 0;
      for (int32_t j = 0; j < n; ++j) degree += !done[j] && adjacent(i, j);
      if (degree > best_degree) {
        best = i;
        best_degree = degree;
      }
    }
    if (best < 0) break;
    const int32_t k = static_cast<int32_t>(ref.leaders.size());
    ref.leaders.push_back(best);
    std::vector<int32_t> members = {best};
    for (int32_t j = 0; j < n; ++j) {
      if (!done[j] && adjacent(best, j)) members.push_back(j);
    }
    for (int32_t j : members) {
      ref.index[j] = k;
      done[j] = true;
    }
  }
  return ref;
}

// Moves theta up until no pair of rows has a cosine within 1e-5 of it, so
// float (library) and double (reference) agree on every edge.
float AwayFromPairs(const std::vector<float>& x, int32_t n, int32_t d,
                    float theta) {
  std::vector<double> cos;
  for (int32_t i = 0; i < n; ++i) {
    for (int32_t j = i + 1; j < n; ++j) {
      if (NormD(&x[i * d], d) > 0 && NormD(&x[j * d], d) > 0) {
        cos.push_back(CosD(&x[i * d], &x[j * d], d));
      }
    }
  }
  for (bool clear = false; !clear;) {
    clear = true;
    for (double c : cos) {
      if (std::abs(c - theta) < 1e-5) {
        theta += 3e-5f;
        clear = false;
        break;
      }
    }
  }
  return theta;
}

// ---------------------------------------------------------------------------
// Options

TEST(CodebookOptionsTest, DefaultsAreSpindleKv) {
  CodebookOptions o;
  EXPECT_FLOAT_EQ(o.theta_k, 0.98f);
  EXPECT_FLOAT_EQ(o.theta_v, 0.95f);
  EXPECT_TRUE(ValidateCodebookOptions(o).ok());
  o.theta_v = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(ValidateCodebookOptions(o).message(), HasSubstr("theta_v"));
  o.theta_v = 2.0f;  // keep everything
  EXPECT_TRUE(ValidateCodebookOptions(o).ok());
}

// ---------------------------------------------------------------------------
// Build

// Planted clusters: 5 centre directions at least 60 degrees apart, members
// within 4.6 degrees of their centre (so within 9.2 degrees of each other:
// cos >= 0.987), sizes 60, 50, 40, 30, 20 interleaved at random. The graph is
// then 5 disjoint cliques: one codeword per planted cluster, largest first,
// each the direction of its cluster's lowest-index member.
TEST(CodebookBuildTest, FindsPlantedClusters) {
  constexpr int32_t kD = 16;
  const std::vector<int32_t> sizes = {60, 50, 40, 30, 20};
  const int32_t k = static_cast<int32_t>(sizes.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.5f, 3.0f);
  std::vector<std::vector<float>> centres;
  while (static_cast<int32_t>(centres.size()) < k) {
    std::vector<float> c(kD);
    for (float& v : c) v = normal(rng);
    c = Unit(c.data(), kD);
    bool far = true;
    for (const auto& o : centres) far &= CosD(c.data(), o.data(), kD) < 0.5;
    if (far) centres.push_back(c);
  }
  std::vector<int32_t> planted;
  for (int32_t c = 0; c < k; ++c) planted.insert(planted.end(), sizes[c], c);
  std::shuffle(planted.begin(), planted.end(), rng);
  const int64_t n = static_cast<int64_t>(planted.size());
  std::vector<float> x(n * kD);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> g(kD);
    for (float& v : g) v = normal(rng);
    const double gn = NormD(g.data(), kD);
    const float m = scale(rng);
    for (int32_t i = 0; i < kD; ++i) {
      x[t * kD + i] =
          m * (centres[planted[t]][i] + static_cast<float>(0.08 * g[i] / gn));
    }
  }
  for (float theta : {CodebookOptions().theta_k, CodebookOptions().theta_v}) {
    SCOPED_TRACE(theta);
    std::vector<int32_t> index;
    std::vector<float> mag;
    const Codebook cb = Codebook::Build(x.data(), n, kD, theta, &index, &mag);
    ExpectBuildInvariants(x, n, kD, theta, cb, index, mag);
    ASSERT_EQ(cb.num_codewords(), k);
    // Codeword c is planted cluster c (sizes are descending).
    for (int64_t t = 0; t < n; ++t) EXPECT_EQ(index[t], planted[t]) << t;
    for (int32_t c = 0; c < k; ++c) {
      const int64_t first =
          std::find(planted.begin(), planted.end(), c) - planted.begin();
      const std::vector<float> u = Unit(&x[first * kD], kD);
      for (int32_t i = 0; i < kD; ++i) {
        EXPECT_NEAR(cb.codeword(c)[i], u[i], 1e-6);
      }
    }
  }
}

// Highest-degree-first versus first-come. Directions (degrees) 0, 20, 40,
// 100, 120, 135 with theta = cos 30: edges 0-1, 1-2, 3-4, 4-5; degrees
// 1, 2, 1, 1, 2, 1. Greedy picks row 1 (degree 2, lower index than row 4):
// cluster {0, 1, 2} around 20 degrees; then row 4: {3, 4, 5} around 120.
// First-come (each row joins an earlier codeword or starts one, i.e. Append
// in order) gives 4 codewords: 0 {0, 1}, 40 {2}, 100 {3, 4}, 135 {5}.
TEST(CodebookBuildTest, HighestDegreeFirstBeatsFirstCome) {
  const float theta = static_cast<float>(std::cos(std::numbers::pi / 6));
  const std::vector<double> deg = {0, 20, 40, 100, 120, 135};
  const std::vector<double> mag = {1, 2, 0.5, 3, 1.5, 0.25};
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < deg.size(); ++i) rows.push_back(Polar(deg[i], mag[i]));
  const std::vector<float> x = Concat(rows);
  const int64_t n = 6;

  std::vector<int32_t> index;
  std::vector<float> magnitude;
  const Codebook cb =
      Codebook::Build(x.data(), n, 2, theta, &index, &magnitude);
  EXPECT_THAT(index, ElementsAre(0, 0, 0, 1, 1, 1));
  ASSERT_EQ(cb.num_codewords(), 2);
  const std::vector<float> c0 = Polar(20, 1), c1 = Polar(120, 1);
  EXPECT_NEAR(cb.codeword(0)[0], c0[0], 1e-6);
  EXPECT_NEAR(cb.codeword(0)[1], c0[1], 1e-6);
  EXPECT_NEAR(cb.codeword(1)[0], c1[0], 1e-6);
  EXPECT_NEAR(cb.codeword(1)[1], c1[1], 1e-6);
  ExpectBuildInvariants(x, n, 2, theta, cb, index, magnitude);
  // Rows 0 and 2 share a codeword without being neighbours (40 degrees).
  EXPECT_LT(CosD(&x[0], &x[4], 2), theta);

  Codebook first_come(2);
  std::vector<int32_t> fc_index;
  for (int64_t t = 0; t < n; ++t) {
    float m;
    fc_index.push_back(first_come.Append(&x[t * 2], theta, &m));
  }
  EXPECT_THAT(fc_index, ElementsAre(0, 0, 1, 2, 2, 3));
  EXPECT_EQ(first_come.num_codewords(), 4);
}

// Equal degrees: the lowest row index leads. Rows at 0 and 20 degrees are
// neighbours (degree 1 each), the row at 90 is alone.
TEST(CodebookBuildTest, TiesGoToLowestIndex) {
  const float theta = static_cast<float>(std::cos(std::numbers::pi / 6));
  const std::vector<float> x =
      Concat({Polar(20, 1.0), Polar(0, 2.0), Polar(90, 1.0)});
  std::vector<int32_t> index;
  std::vector<float> mag;
  const Codebook cb = Codebook::Build(x.data(), 3, 2, theta, &index, &mag);
  EXPECT_THAT(index, ElementsAre(0, 0, 1));
  ASSERT_EQ(cb.num_codewords(), 2);
  EXPECT_NEAR(cb.codeword(0)[0], std::cos(std::numbers::pi / 9), 1e-6);
  EXPECT_NEAR(cb.codeword(1)[1], 1.0, 1e-6);
}

// The library against the O(n^3) reference of the greedy rule on clustered
// random data with zero rows and a duplicate, n = 97, d = 12.
TEST(CodebookBuildTest, MatchesBruteForceReference) {
  constexpr int32_t kN = 97, kD = 12;
  int32_t distinct_counts = 0;
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::vector<float> x = ClusteredData(kN, kD, 6, seed);
    std::fill_n(&x[10 * kD], kD, 0.0f);
    std::fill_n(&x[50 * kD], kD, 0.0f);
    std::copy_n(&x[21 * kD], kD, &x[20 * kD]);
    for (float t : {-0.5f, 0.0f, 0.5f, 0.8f, 0.9f, 0.95f, 0.98f, 0.999f}) {
      const float theta = AwayFromPairs(x, kN, kD, t);
      SCOPED_TRACE(testing::Message() << "seed " << seed << " theta " << theta);
      const Reference ref = ReferenceGreedy(x, kN, kD, theta);
      std::vector<int32_t> index;
      std::vector<float> mag;
      const Codebook cb =
          Codebook::Build(x.data(), kN, kD, theta, &index, &mag);
      ASSERT_EQ(cb.num_codewords(), static_cast<int32_t>(ref.leaders.size()));
      EXPECT_EQ(index, ref.index);
      for (int32_t c = 0; c < cb.num_codewords(); ++c) {
        const std::vector<float> u = Unit(&x[ref.leaders[c] * kD], kD);
        for (int32_t i = 0; i < kD; ++i) {
          ASSERT_NEAR(cb.codeword(c)[i], u[i], 1e-6) << "codeword " << c;
        }
      }
      ExpectBuildInvariants(x, kN, kD, theta, cb, index, mag);
      distinct_counts += cb.num_codewords() > 1 && cb.num_codewords() < kN - 3;
    }
  }
  // The thresholds exercise real merging, not only the extremes.
  EXPECT_GE(distinct_counts, 12);
}

TEST(CodebookBuildTest, ErrorWithinThresholdBound) {
  constexpr int64_t kN = 300;
  constexpr int32_t kD = 32;
  const std::vector<float> x = ClusteredData(kN, kD, 8, 11);
  for (float theta : {0.5f, 0.9f, 0.95f, 0.98f}) {
    SCOPED_TRACE(theta);
    std::vector<int32_t> index;
    std::vector<float> mag;
    const Codebook cb = Codebook::Build(x.data(), kN, kD, theta, &index, &mag);
    EXPECT_LT(cb.num_codewords(), kN);
    ExpectBuildInvariants(x, kN, kD, theta, cb, index, mag);
  }
}

// theta >= 1 keeps everything: one codeword per nonzero row, even for exact
// duplicates, and reconstruction to 1e-6 relative.
TEST(CodebookBuildTest, ThetaOneReproducesInput) {
  constexpr int64_t kN = 50;
  constexpr int32_t kD = 7;
  std::vector<float> x = ClusteredData(kN, kD, 3, 5);
  std::copy_n(&x[3 * kD], kD, &x[4 * kD]);
  for (float theta : {1.0f, 1.5f, std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(theta);
    std::vector<int32_t> index;
    std::vector<float> mag;
    const Codebook cb = Codebook::Build(x.data(), kN, kD, theta, &index, &mag);
    EXPECT_EQ(cb.num_codewords(), kN);
    for (int64_t t = 0; t < kN; ++t) EXPECT_EQ(index[t], t);
    ExpectBuildInvariants(x, kN, kD, theta, cb, index, mag);
  }
}

TEST(CodebookBuildTest, ZeroRowsHaveZeroMagnitudeAndIndexZero) {
  const float theta = 0.9f;
  const std::vector<float> a = {1, 2, 3}, b = {-3, 1, 0.5f}, z = {0, 0, 0};
  const std::vector<float> x = Concat({z, a, z, b, a});
  std::vector<int32_t> index;
  std::vector<float> mag;
  const Codebook cb = Codebook::Build(x.data(), 5, 3, theta, &index, &mag);
  // Rows 1 and 4 (both a, degree 1) lead; row 3 (b) is alone.
  EXPECT_THAT(index, ElementsAre(0, 0, 0, 1, 0));
  EXPECT_EQ(mag[0], 0.0f);
  EXPECT_EQ(mag[2], 0.0f);
  ASSERT_EQ(cb.num_codewords(), 2);
  ExpectBuildInvariants(x, 5, 3, theta, cb, index, mag);
  // The zero rows change nothing for the others.
  const std::vector<float> x2 = Concat({a, b, a});
  std::vector<int32_t> index2;
  const Codebook cb2 = Codebook::Build(x2.data(), 3, 3, theta, &index2, &mag);
  EXPECT_EQ(cb2.codewords(), cb.codewords());
  EXPECT_THAT(index2, ElementsAre(0, 1, 0));
}

TEST(CodebookBuildTest, AllZeroRowsGetUnitAxisCodeword) {
  const std::vector<float> x(3 * 4, 0.0f);
  for (float theta : {0.5f, 1.0f}) {
    std::vector<int32_t> index;
    std::vector<float> mag;
    const Codebook cb = Codebook::Build(x.data(), 3, 4, theta, &index, &mag);
    EXPECT_THAT(cb.codewords(), ElementsAre(1, 0, 0, 0));
    EXPECT_THAT(index, ElementsAre(0, 0, 0));
    EXPECT_THAT(mag, ElementsAre(0, 0, 0));
    ExpectBuildInvariants(x, 3, 4, theta, cb, index, mag);
  }
}

// d = 1: directions are +1 and -1; the positive rows (degree 2) lead.
TEST(CodebookBuildTest, DimensionOne) {
  const std::vector<float> x = {3, -2, 0.5f, -0.1f, 0, 7};
  std::vector<int32_t> index;
  std::vector<float> mag;
  const Codebook cb = Codebook::Build(x.data(), 6, 1, 0.5f, &index, &mag);
  EXPECT_THAT(cb.codewords(), ElementsAre(1.0f, -1.0f));
  EXPECT_THAT(index, ElementsAre(0, 1, 0, 1, 0, 0));
  std::vector<float> rec(6);
  cb.Reconstruct(index.data(), mag.data(), 6, rec.data());
  EXPECT_EQ(rec, x);
  const Codebook keep = Codebook::Build(x.data(), 6, 1, 1.0f, &index, &mag);
  EXPECT_EQ(keep.num_codewords(), 5);
  EXPECT_THAT(index, ElementsAre(0, 1, 2, 3, 0, 4));
}

TEST(CodebookBuildTest, OneRowAndNoRows) {
  const std::vector<float> x = {0.3f, -1.2f, 4.0f, 0.01f, -2.5f};
  std::vector<int32_t> index;
  std::vector<float> mag;
  const Codebook cb = Codebook::Build(x.data(), 1, 5, 0.98f, &index, &mag);
  EXPECT_EQ(cb.num_codewords(), 1);
  EXPECT_THAT(index, ElementsAre(0));
  ExpectBuildInvariants(x, 1, 5, 0.98f, cb, index, mag);

  const Codebook empty = Codebook::Build(nullptr, 0, 5, 0.98f, &index, &mag);
  EXPECT_EQ(empty.d(), 5);
  EXPECT_EQ(empty.num_codewords(), 0);
  EXPECT_TRUE(index.empty());
  EXPECT_TRUE(mag.empty());
}

// One KV head's rows of [n, n_kv = 3, d]: the strided build equals the build
// of the packed copy, and the strided reconstruction writes only that head.
TEST(CodebookBuildTest, StridedRowsMatchPacked) {
  constexpr int64_t kN = 40;
  constexpr int32_t kD = 6, kHeads = 3, kHead = 1;
  const std::vector<float> big = ClusteredData(kN * kHeads, kD, 4, 9);
  std::vector<float> packed;
  for (int64_t t = 0; t < kN; ++t) {
    const float* r = &big[(t * kHeads + kHead) * kD];
    packed.insert(packed.end(), r, r + kD);
  }
  std::vector<int32_t> index, index_p;
  std::vector<float> mag, mag_p;
  const Codebook cb = Codebook::BuildStrided(big.data() + kHead * kD, kN, kD,
                                             kHeads * kD, 0.8f, &index, &mag);
  const Codebook cb_p =
      Codebook::Build(packed.data(), kN, kD, 0.8f, &index_p, &mag_p);
  EXPECT_EQ(cb.codewords(), cb_p.codewords());
  EXPECT_EQ(index, index_p);
  EXPECT_EQ(mag, mag_p);

  std::vector<float> out(big.size(), -7.0f);
  cb.ReconstructStrided(index.data(), mag.data(), kN, out.data() + kHead * kD,
                        kHeads * kD);
  std::vector<float> rec(kN * kD);
  cb_p.Reconstruct(index_p.data(), mag_p.data(), kN, rec.data());
  for (int64_t t = 0; t < kN; ++t) {
    for (int32_t h = 0; h < kHeads; ++h) {
      for (int32_t i = 0; i < kD; ++i) {
        const float o = out[(t * kHeads + h) * kD + i];
        if (h == kHead) {
          EXPECT_EQ(o, rec[t * kD + i]);
        } else {
          EXPECT_EQ(o, -7.0f);
        }
      }
    }
  }
}

// A larger prefill (n = 3000) stays fast and keeps the invariants.
TEST(CodebookBuildTest, ThousandsOfRows) {
  constexpr int64_t kN = 3000;
  constexpr int32_t kD = 16;
  const std::vector<float> x = ClusteredData(kN, kD, 20, 13);
  std::vector<int32_t> index;
  std::vector<float> mag;
  const Codebook cb = Codebook::Build(x.data(), kN, kD, 0.95f, &index, &mag);
  EXPECT_GT(cb.num_codewords(), 20);
  EXPECT_LT(cb.num_codewords(), kN);
  ExpectBuildInvariants(x, kN, kD, 0.95f, cb, index, mag);
}

TEST(CodebookBuildTest, TryBuildRejectsBadArguments) {
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<int32_t> index = {42};
  std::vector<float> mag = {42};
  auto bad = [&](const float* p, int64_t n, int32_t d, int64_t stride,
                 float theta) {
    return Codebook::TryBuild(p, n, d, stride, theta, &index, &mag).status();
  };
  EXPECT_EQ(bad(x.data(), 2, 0, 2, 0.9f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(x.data(), -1, 2, 2, 0.9f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(x.data(), 2, 2, 1, 0.9f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(nullptr, 2, 2, 2, 0.9f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad(x.data(), 2, 2, 2, std::nanf("")).message(),
              HasSubstr("NaN"));
  EXPECT_EQ(Codebook::TryBuild(x.data(), 2, 2, 2, 0.9f, nullptr, &mag)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> inf = x;
  inf[3] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(bad(inf.data(), 2, 2, 2, 0.9f).message(),
              HasSubstr("row 1 is not finite"));
  EXPECT_THAT(index, ElementsAre(42));
  EXPECT_THAT(mag, ElementsAre(42));

  absl::StatusOr<Codebook> ok =
      Codebook::TryBuild(x.data(), 2, 2, 2, 0.9f, &index, &mag);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->num_codewords(), 1);  // (1, 2) and (3, 4): cos 0.984
}

// ---------------------------------------------------------------------------
// Append

TEST(CodebookAppendTest, JoinsMostSimilarCodewordAboveThreshold) {
  const float theta = static_cast<float>(std::cos(std::numbers::pi / 6));
  absl::StatusOr<Codebook> cb =
      Codebook::FromCodewords(2, Concat({Polar(0, 1), Polar(10, 1)}));
  ASSERT_TRUE(cb.ok()) << cb.status();
  float m = 0;
  // 8 degrees: both codewords clear theta; codeword 1 is closer.
  EXPECT_EQ(cb->Append(Polar(8, 2).data(), theta, &m), 1);
  EXPECT_FLOAT_EQ(m, 2.0f);
  EXPECT_EQ(cb->Append(Polar(1, 0.5).data(), theta, &m), 0);
  EXPECT_FLOAT_EQ(m, 0.5f);
  EXPECT_EQ(cb->num_codewords(), 2);
}

TEST(CodebookAppendTest, CreatesCodewordBelowThreshold) {
  const float theta = static_cast<float>(std::cos(std::numbers::pi / 6));
  absl::StatusOr<Codebook> cb =
      Codebook::FromCodewords(2, Concat({Polar(0, 1), Polar(10, 1)}));
  ASSERT_TRUE(cb.ok());
  float m = 0;
  // 60 degrees: nearest codeword is 50 degrees away.
  EXPECT_EQ(cb->Append(Polar(60, 3).data(), theta, &m), 2);
  EXPECT_FLOAT_EQ(m, 3.0f);
  ASSERT_EQ(cb->num_codewords(), 3);
  EXPECT_NEAR(cb->codeword(2)[0], 0.5, 1e-6);
  EXPECT_NEAR(cb->codeword(2)[1], std::sqrt(3.0) / 2, 1e-6);
  // The new codeword is joinable at once.
  EXPECT_EQ(cb->Append(Polar(65, 1).data(), theta, &m), 2);
  // theta >= 1 always creates, even for an exact duplicate.
  EXPECT_EQ(cb->Append(Polar(0, 1).data(), 1.0f, &m), 3);
  EXPECT_EQ(cb->num_codewords(), 4);
}

TEST(CodebookAppendTest, TiesGoToLowestIndex) {
  absl::StatusOr<Codebook> cb = Codebook::FromCodewords(2, {1, 0, 1, 0});
  ASSERT_TRUE(cb.ok());
  float m = 0;
  const float x[] = {4, 0};
  EXPECT_EQ(cb->Append(x, 0.5f, &m), 0);
}

TEST(CodebookAppendTest, EmptyCodebookAndZeroVectors) {
  Codebook cb(3);
  float m = -1;
  const float zero[] = {0, 0, 0};
  EXPECT_EQ(cb.Append(zero, 0.9f, &m), 0);  // adds e_0
  EXPECT_EQ(m, 0.0f);
  EXPECT_THAT(cb.codewords(), ElementsAre(1, 0, 0));
  const float x[] = {0, 3, 4};
  EXPECT_EQ(cb.Append(x, 0.9f, &m), 1);
  EXPECT_FLOAT_EQ(m, 5.0f);
  EXPECT_THAT(cb.codewords(),
              ElementsAreArray({1.0f, 0.0f, 0.0f, 0.0f, 0.6f, 0.8f}));
  EXPECT_EQ(cb.Append(zero, 0.9f, &m), 0);  // no new codeword
  EXPECT_EQ(cb.num_codewords(), 2);

  Codebook fresh(2);
  const float y[] = {-1, 1};
  EXPECT_EQ(fresh.Append(y, 0.9f, &m), 0);
  EXPECT_NEAR(fresh.codeword(0)[0], -std::sqrt(0.5), 1e-6);
}

TEST(CodebookAppendTest, ExtendsBuiltCodebook) {
  constexpr int64_t kN = 60;
  constexpr int32_t kD = 8;
  const std::vector<float> x = ClusteredData(2 * kN, kD, 4, 17);
  std::vector<int32_t> index;
  std::vector<float> mag;
  Codebook cb = Codebook::Build(x.data(), kN, kD, 0.9f, &index, &mag);
  for (int64_t t = kN; t < 2 * kN; ++t) {
    float m;
    index.push_back(cb.Append(&x[t * kD], 0.9f, &m));
    mag.push_back(m);
  }
  ExpectBuildInvariants(x, 2 * kN, kD, 0.9f, cb, index, mag);
}

// ---------------------------------------------------------------------------
// Construction, reconstruction, K/V pair

TEST(CodebookTest, FromCodewordsChecksShape) {
  EXPECT_EQ(Codebook::FromCodewords(0, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Codebook::FromCodewords(2, {1, 0, 1}).status().message(),
              HasSubstr("multiple"));
  absl::StatusOr<Codebook> cb = Codebook::FromCodewords(2, {});
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->num_codewords(), 0);
}

TEST(CodebookDeathTest, ReconstructRejectsBadIndex) {
  Codebook cb(2);
  float m;
  const float x[] = {1, 0};
  cb.Append(x, 0.9f, &m);
  const int32_t index[] = {1};
  const float mag[] = {1};
  float out[2];
  EXPECT_DEATH(cb.Reconstruct(index, mag, 1, out), "index 1 of row 0");
}

// K and V are clustered separately with their own thresholds: two rows at
// cos 0.96 merge under theta_v = 0.95 but not under theta_k = 0.98.
TEST(KvCodebooksTest, SeparateThresholds) {
  const double a = std::acos(0.96) * 180 / std::numbers::pi;
  const std::vector<float> k = Concat({Polar(0, 1), Polar(a, 2)});
  const std::vector<float> v = Concat({Polar(0, 3), Polar(a, 4)});
  absl::StatusOr<KvCodebooks> kv =
      BuildKvCodebooks(k.data(), 2, 2, v.data(), 2, 2, 2, CodebookOptions());
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->k.num_codewords(), 2);
  EXPECT_EQ(kv->v.num_codewords(), 1);
  EXPECT_THAT(kv->k_index, ElementsAre(0, 1));
  EXPECT_THAT(kv->v_index, ElementsAre(0, 0));
  EXPECT_FLOAT_EQ(kv->k_magnitude[1], 2.0f);
  EXPECT_FLOAT_EQ(kv->v_magnitude[1], 4.0f);

  EXPECT_THAT(
      BuildKvCodebooks(k.data(), 2, 2, v.data(), 0, 2, 2, CodebookOptions())
          .status()
          .message(),
      HasSubstr("V: "));
  CodebookOptions nan;
  nan.theta_k = std::nanf("");
  EXPECT_EQ(
      BuildKvCodebooks(k.data(), 2, 2, v.data(), 2, 2, 2, nan).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::worker
