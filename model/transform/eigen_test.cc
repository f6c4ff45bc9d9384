#include "model/transform/eigen.h"

#include <cmath>
#include <complex>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace latentkv::model::transform {
namespace {

TEST(EigenTest, SymmetricTopPairsSatisfyAvEqualsLambdaV) {
  const int n = 4;
  const std::vector<double> a = {4,   1,   0.5, 0,   1, 3,   0.2, 0.1,
                                 0.5, 0.2, 2,   0.3, 0, 0.1, 0.3, 1};
  auto e = TopEigenSymmetric(a, n, 2);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_GT(e->values[0], e->values[1]);
  for (int c = 0; c < 2; ++c) {
    double norm = 0.0;
    for (int r = 0; r < n; ++r) {
      double av = 0.0;
      for (int k = 0; k < n; ++k) av += a[r * n + k] * e->vectors[k * 2 + c];
      EXPECT_NEAR(av, e->values[c] * e->vectors[r * 2 + c], 1e-12);
      norm += e->vectors[r * 2 + c] * e->vectors[r * 2 + c];
    }
    EXPECT_NEAR(norm, 1.0, 1e-12);
  }
  // Diagonal: the largest entries, in order.
  auto d = TopEigenSymmetric({1, 0, 0, 0, 5, 0, 0, 0, 3}, 3, 3);
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(d->values[0], 5, 1e-12);
  EXPECT_NEAR(d->values[1], 3, 1e-12);
  EXPECT_NEAR(d->values[2], 1, 1e-12);
  EXPECT_NEAR(std::abs(d->vectors[1 * 3 + 0]), 1.0, 1e-12);
}

TEST(EigenTest, HermitianTopVector) {
  using C = std::complex<double>;
  const int n = 3;
  const std::vector<C> a = {{2, 0},     {1, 1},   {0, -0.5},   {1, -1}, {3, 0},
                            {0.2, 0.3}, {0, 0.5}, {0.2, -0.3}, {1, 0}};
  auto e = TopEigenHermitian(a, n, 1);
  ASSERT_TRUE(e.ok()) << e.status();
  double norm = 0.0;
  for (int r = 0; r < n; ++r) {
    C av = 0.0;
    for (int k = 0; k < n; ++k) av += a[r * n + k] * e->vectors[k];
    EXPECT_NEAR(std::abs(av - e->values[0] * e->vectors[r]), 0.0, 1e-12);
    norm += std::norm(e->vectors[r]);
  }
  EXPECT_NEAR(norm, 1.0, 1e-12);
}

TEST(EigenTest, BadSizes) {
  EXPECT_EQ(TopEigenSymmetric({1, 2, 3}, 2, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TopEigenSymmetric({1, 0, 0, 1}, 2, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TopEigenHermitian({1.0}, 1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model::transform
