#include "worker/codebook/codebook.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace latentkv::worker {
namespace {

// Dot product of a [d] and b [d] in a fixed order: eight running sums over
// k mod 8, combined pairwise, then the tail. Each term is a[k] * b[k], so
// Dot(a, b) == Dot(b, a) bit for bit.
inline float Dot(const float* a, const float* b, int32_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int32_t k = 0;
  for (; k + 8 <= d; k += 8) {
    for (int32_t l = 0; l < 8; ++l) acc[l] += a[k + l] * b[k + l];
  }
  float tail = 0;
  for (; k < d; ++k) tail += a[k] * b[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
         ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// Appends to *out the candidates c (cand [count], c != p) whose unit row is a
// neighbour of row p: Dot(units[p], units[c]) > theta. Every adjacency
// decision of Build goes through this one (not inlined) function, so a pair
// is judged the same way each time it is examined -- the degree bookkeeping
// relies on that.
[[gnu::noinline]] void Neighbours(const float* units, int32_t d, int32_t p,
                                  const int32_t* cand, int64_t count,
                                  float theta, std::vector<int32_t>* out) {
  const float* a = units + int64_t{p} * d;
  for (int64_t i = 0; i < count; ++i) {
    const int32_t c = cand[i];
    if (c == p) continue;
    if (Dot(a, units + int64_t{c} * d, d) > theta) out->push_back(c);
  }
}

// |x| (computed in double) and, when nonzero, the unit direction in u [d].
// Returns the double norm (0 for a zero vector; u is then untouched).
double Normalise(const float* x, int32_t d, float* u) {
  double sq = 0;
  for (int32_t i = 0; i < d; ++i) sq += double{x[i]} * x[i];
  const double norm = std::sqrt(sq);
  if (norm > 0) {
    for (int32_t i = 0; i < d; ++i) u[i] = static_cast<float>(x[i] / norm);
  }
  return norm;
}

// Greedy highest-degree clustering of the m unit rows units [m, d]. Appends
// one codeword per cluster to *codewords (which starts empty) and writes the
// codeword index of row p to cluster[p].
void GreedyCluster(const float* units, int32_t m, int32_t d, float theta,
                   std::vector<float>* codewords,
                   std::vector<int32_t>* cluster) {
  cluster->assign(m, -1);
  // Unassigned rows, ascending; degree[p] = unassigned neighbours of p.
  std::vector<int32_t> alive(m);
  std::iota(alive.begin(), alive.end(), 0);
  std::vector<int32_t> degree(m, 0);
  std::vector<int32_t> nb, nb2;
  for (int32_t p = 0; p < m; ++p) {
    nb.clear();
    Neighbours(units, d, p, alive.data() + p + 1, m - p - 1, theta, &nb);
    degree[p] += static_cast<int32_t>(nb.size());
    for (int32_t q : nb) ++degree[q];
  }
  int32_t next = 0;
  while (!alive.empty()) {
    int32_t v = alive[0];
    for (int32_t p : alive) {
      if (degree[p] > degree[v]) v = p;  // strict: the lowest index wins ties
    }
    nb.clear();
    Neighbours(units, d, v, alive.data(), static_cast<int64_t>(alive.size()),
               theta, &nb);
    const float* u = units + int64_t{v} * d;
    codewords->insert(codewords->end(), u, u + d);
    (*cluster)[v] = next;
    for (int32_t q : nb) (*cluster)[q] = next;
    ++next;
    std::erase_if(alive, [&](int32_t p) { return (*cluster)[p] >= 0; });
    // v's neighbours all left with it; each removed neighbour q costs its
    // remaining neighbours one degree.
    for (int32_t q : nb) {
      nb2.clear();
      Neighbours(units, d, q, alive.data(), static_cast<int64_t>(alive.size()),
                 theta, &nb2);
      for (int32_t r : nb2) --degree[r];
    }
  }
}

absl::Status CheckBuildArgs(const float* x, int64_t n, int32_t d,
                            int64_t stride, float theta,
                            const std::vector<int32_t>* index,
                            const std::vector<float>* magnitude) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrCat("d = ", d));
  if (n < 0 || n > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("n = ", n, " outside [0, 2^31)"));
  }
  if (stride < d) {
    return absl::InvalidArgumentError(
        absl::StrCat("row stride ", stride, " < d = ", d));
  }
  if (n > 0 && x == nullptr) {
    return absl::InvalidArgumentError("null input with n > 0");
  }
  if (index == nullptr || magnitude == nullptr) {
    return absl::InvalidArgumentError("null index or magnitude output");
  }
  if (std::isnan(theta)) return absl::InvalidArgumentError("theta is NaN");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateCodebookOptions(const CodebookOptions& options) {
  if (std::isnan(options.theta_k)) {
    return absl::InvalidArgumentError("theta_k is NaN");
  }
  if (std::isnan(options.theta_v)) {
    return absl::InvalidArgumentError("theta_v is NaN");
  }
  return absl::OkStatus();
}

Codebook::Codebook(int32_t d) : d_(d) {
  LATENTKV_CHECK(d >= 1, "codebook dimension ", d);
}

absl::StatusOr<Codebook> Codebook::FromCodewords(int32_t d,
                                                 std::vector<float> codewords) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrCat("d = ", d));
  if (codewords.size() % d != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        codewords.size(), " codeword floats is not a multiple of d = ", d));
  }
  if (codewords.size() / d >
      static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("too many codewords");
  }
  Codebook cb(d);
  cb.codewords_ = std::move(codewords);
  return cb;
}

Codebook Codebook::Build(const float* x, int64_t n, int32_t d, float theta,
                         std::vector<int32_t>* index,
                         std::vector<float>* magnitude) {
  return BuildStrided(x, n, d, d, theta, index, magnitude);
}

Codebook Codebook::BuildStrided(const float* x, int64_t n, int32_t d,
                                int64_t stride, float theta,
                                std::vector<int32_t>* index,
                                std::vector<float>* magnitude) {
  const absl::Status args =
      CheckBuildArgs(x, n, d, stride, theta, index, magnitude);
  LATENTKV_CHECK(args.ok(), args.ToString());
  Codebook cb(d);
  index->assign(n, 0);
  magnitude->assign(n, 0.0f);
  // Unit rows of the nonzero vectors, compacted: units [m, d], row p is
  // input row rows[p].
  std::vector<float> units(static_cast<size_t>(n) * d);
  std::vector<int32_t> rows;
  rows.reserve(n);
  for (int64_t t = 0; t < n; ++t) {
    float* u = units.data() + rows.size() * d;
    const double norm = Normalise(x + t * stride, d, u);
    (*magnitude)[t] = static_cast<float>(norm);
    if (norm > 0) rows.push_back(static_cast<int32_t>(t));
  }
  const int32_t m = static_cast<int32_t>(rows.size());
  units.resize(static_cast<size_t>(m) * d);
  if (!(theta < 1.0f)) {
    // Keep everything: each nonzero vector is its own codeword, in order.
    cb.codewords_ = std::move(units);
    for (int32_t p = 0; p < m; ++p) (*index)[rows[p]] = p;
  } else {
    std::vector<int32_t> cluster;
    GreedyCluster(units.data(), m, d, theta, &cb.codewords_, &cluster);
    for (int32_t p = 0; p < m; ++p) (*index)[rows[p]] = cluster[p];
  }
  if (m == 0 && n > 0) {
    // Only zero vectors: codeword 0 = e_0; every index is already 0.
    cb.codewords_.assign(d, 0.0f);
    cb.codewords_[0] = 1.0f;
  }
  return cb;
}

absl::StatusOr<Codebook> Codebook::TryBuild(const float* x, int64_t n,
                                            int32_t d, int64_t stride,
                                            float theta,
                                            std::vector<int32_t>* index,
                                            std::vector<float>* magnitude) {
  if (absl::Status s = CheckBuildArgs(x, n, d, stride, theta, index, magnitude);
      !s.ok()) {
    return s;
  }
  for (int64_t t = 0; t < n; ++t) {
    for (int32_t i = 0; i < d; ++i) {
      if (!std::isfinite(x[t * stride + i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", i, " of row ", t, " is not finite"));
      }
    }
  }
  return BuildStrided(x, n, d, stride, theta, index, magnitude);
}

int32_t Codebook::Append(const float* x, float theta, float* magnitude) {
  LATENTKV_CHECK(d_ >= 1, "Append to a codebook of dimension ", d_);
  LATENTKV_CHECK(!std::isnan(theta), "theta is NaN");
  const int32_t n = num_codewords();
  LATENTKV_CHECK(n < std::numeric_limits<int32_t>::max(), "codebook full");
  std::vector<float> u(d_);
  const double norm = Normalise(x, d_, u.data());
  *magnitude = static_cast<float>(norm);
  if (!(norm > 0)) {
    if (n == 0) {
      codewords_.assign(d_, 0.0f);
      codewords_[0] = 1.0f;
    }
    return 0;
  }
  if (theta < 1.0f) {
    int32_t best = -1;
    float best_cos = 0;
    for (int32_t c = 0; c < n; ++c) {
      const float cos = Dot(u.data(), codeword(c), d_);
      if (best < 0 || cos > best_cos) {
        best = c;
        best_cos = cos;
      }
    }
    if (best >= 0 && best_cos > theta) return best;
  }
  codewords_.insert(codewords_.end(), u.begin(), u.end());
  return n;
}

void Codebook::Reconstruct(const int32_t* index, const float* magnitude,
                           int64_t n, float* out) const {
  ReconstructStrided(index, magnitude, n, out, d_);
}

void Codebook::ReconstructStrided(const int32_t* index, const float* magnitude,
                                  int64_t n, float* out,
                                  int64_t out_stride) const {
  LATENTKV_CHECK(out_stride >= d_, "out_stride ", out_stride, " < d = ", d_);
  const int32_t num = num_codewords();
  for (int64_t t = 0; t < n; ++t) {
    const int32_t c = index[t];
    LATENTKV_CHECK(c >= 0 && c < num, "index ", c, " of row ", t,
                   " outside [0, ", num, ")");
    const float* w = codeword(c);
    float* o = out + t * out_stride;
    for (int32_t i = 0; i < d_; ++i) o[i] = magnitude[t] * w[i];
  }
}

absl::StatusOr<KvCodebooks> BuildKvCodebooks(const float* k, int32_t d_k,
                                             int64_t k_stride, const float* v,
                                             int32_t d_v, int64_t v_stride,
                                             int64_t n,
                                             const CodebookOptions& options) {
  if (absl::Status s = ValidateCodebookOptions(options); !s.ok()) return s;
  KvCodebooks out;
  absl::StatusOr<Codebook> kb = Codebook::TryBuild(
      k, n, d_k, k_stride, options.theta_k, &out.k_index, &out.k_magnitude);
  if (!kb.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("K: ", kb.status().message()));
  }
  absl::StatusOr<Codebook> vb = Codebook::TryBuild(
      v, n, d_v, v_stride, options.theta_v, &out.v_index, &out.v_magnitude);
  if (!vb.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("V: ", vb.status().message()));
  }
  out.k = *std::move(kb);
  out.v = *std::move(vb);
  return out;
}

}  // namespace latentkv::worker
