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

// S^(1/2) and S^(-1/2) of a symmetric positive semi-definite [n, n] `a`
// (row-major), with eigenvalues floored at `floor_rel` times the largest
// (so a singular S gets a bounded inverse). Same errors as above.
struct SymmetricRoots {
  std::vector<double> sqrt;      // [n, n]
  std::vector<double> inv_sqrt;  // [n, n]
};
absl::StatusOr<SymmetricRoots> SymmetricSquareRoots(
    const std::vector<double>& a, int n, double floor_rel = 1e-12);

// c = a b for row-major a [n, k] and b [k, m] (each entry summed over k in
// ascending order).
std::vector<double> DenseProduct(const std::vector<double>& a,
                                 const std::vector<double>& b, int n, int k,
                                 int m);

// The [idx.size()]^2 submatrix of `a` [n, n] (row-major) on rows and
// columns `idx`.
std::vector<double> SquareSubmatrix(const std::vector<double>& a, int n,
                                    const std::vector<int>& idx);

// Writes `b` [m, m] into `a` [n, n] (row-major) at rows and columns
// at .. at + m - 1 (a block of a block-diagonal matrix).
void PutDiagonalBlock(const std::vector<double>& b, int m, int at, int n,
                      std::vector<double>* a);

// The top `k` eigenvectors of symmetric `a` [n, n] as rows: [k, n]
// row-major (row i is eigenvector i, largest eigenvalue first). Errors:
// those of TopEigenSymmetric.
absl::StatusOr<std::vector<double>> TopEigenRows(const std::vector<double>& a,
                                                 int n, int k);

// Solves a x = b for x with `a` [n, n] symmetric positive definite
// (row-major) and b [n, nrhs] row-major (Cholesky, LAPACK dposv); returns x
// [n, nrhs]. Errors: InvalidArgument for bad sizes, FailedPrecondition when
// `a` is not positive definite.
absl::StatusOr<std::vector<double>> SolveSymmetricPositive(
    const std::vector<double>& a, int n, const std::vector<double>& b,
    int nrhs);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_EIGEN_H_
