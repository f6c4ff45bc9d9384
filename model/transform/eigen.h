// Eigendecompositions for the model conversions, via LAPACK (dsyev_, zheev_)
// from OpenBLAS.
//
// Matrices are dense row-major [n, n]; only symmetric / Hermitian inputs are
// meaningful (the upper triangle is read). Results are sorted by eigenvalue,
// largest first.
#ifndef LATENTKV_MODEL_TRANSFORM_EIGEN_H_
#define LATENTKV_MODEL_TRANSFORM_EIGEN_H_

#include <complex>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::model::transform {

// The top `k` eigenpairs of a real symmetric matrix.
struct SymmetricEigen {
  std::vector<double> values;   // [k], descending
  std::vector<double> vectors;  // [n, k] row-major: column c is eigenvector c
};

// The top `k` eigenpairs of a complex Hermitian matrix.
struct HermitianEigen {
  std::vector<double> values;                 // [k], descending
  std::vector<std::complex<double>> vectors;  // [n, k] row-major, unit columns
};

// `a` is [n, n] row-major symmetric; 1 <= k <= n. Errors: InvalidArgument for
// bad sizes, Internal when LAPACK does not converge.
absl::StatusOr<SymmetricEigen> TopEigenSymmetric(const std::vector<double>& a,
                                                 int n, int k);

// `a` is [n, n] row-major Hermitian; 1 <= k <= n. Same errors.
absl::StatusOr<HermitianEigen> TopEigenHermitian(
    const std::vector<std::complex<double>>& a, int n, int k);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_EIGEN_H_
