#include "model/transform/eigen.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// LAPACK's Fortran entry points (OpenBLAS exports them). The trailing size_t
// arguments are the hidden lengths gfortran passes for CHARACTER arguments.
extern "C" {
void dsyev_(const char* jobz, const char* uplo, const int* n, double* a,
            const int* lda, double* w, double* work, const int* lwork,
            int* info, size_t jobz_len, size_t uplo_len);
void dposv_(const char* uplo, const int* n, const int* nrhs, double* a,
            const int* lda, double* b, const int* ldb, int* info,
            size_t uplo_len);
void zheev_(const char* jobz, const char* uplo, const int* n,
            std::complex<double>* a, const int* lda, double* w,
            std::complex<double>* work, const int* lwork, double* rwork,
            int* info, size_t jobz_len, size_t uplo_len);
}

namespace latentkv::model::transform {
namespace {

absl::Status CheckSizes(size_t size, int n, int k) {
  if (n <= 0 || k <= 0 || k > n ||
      size != static_cast<size_t>(n) * static_cast<size_t>(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("eigendecomposition: need a [n, n] matrix and 1 <= k <= "
                     "n; got ",
                     size, " values, n=", n, ", k=", k));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SymmetricEigen> TopEigenSymmetric(const std::vector<double>& a,
                                                 int n, int k) {
  absl::Status s = CheckSizes(a.size(), n, k);
  if (!s.ok()) return s;
  // Row-major symmetric == column-major symmetric; LAPACK reads uplo 'U' of
  // the column-major view, i.e. our lower triangle, which equals the upper.
  std::vector<double> m(a);
  std::vector<double> w(n);
  int info = 0;
  int lwork = -1;
  double query = 0.0;
  dsyev_("V", "U", &n, m.data(), &n, w.data(), &query, &lwork, &info, 1, 1);
  lwork = static_cast<int>(query);
  std::vector<double> work(lwork > 0 ? lwork : 1);
  dsyev_("V", "U", &n, m.data(), &n, w.data(), work.data(), &lwork, &info, 1,
         1);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("dsyev failed, info=", info));
  }
  // Ascending eigenvalues; eigenvector c is column c of the column-major
  // result: m[r + c * n].
  SymmetricEigen out;
  out.values.resize(k);
  out.vectors.resize(static_cast<size_t>(n) * k);
  for (int c = 0; c < k; ++c) {
    const int src = n - 1 - c;
    out.values[c] = w[src];
    for (int r = 0; r < n; ++r) {
      out.vectors[static_cast<size_t>(r) * k + c] =
          m[r + static_cast<size_t>(src) * n];
    }
  }
  return out;
}

absl::StatusOr<HermitianEigen> TopEigenHermitian(
    const std::vector<std::complex<double>>& a, int n, int k) {
  absl::Status s = CheckSizes(a.size(), n, k);
  if (!s.ok()) return s;
  // Column-major copy: cm[r + c * n] = a[r, c].
  std::vector<std::complex<double>> m(a.size());
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < n; ++c) {
      m[r + static_cast<size_t>(c) * n] = a[static_cast<size_t>(r) * n + c];
    }
  }
  std::vector<double> w(n);
  std::vector<double> rwork(3 * n > 2 ? 3 * n - 2 : 1);
  int info = 0;
  int lwork = -1;
  std::complex<double> query = 0.0;
  zheev_("V", "U", &n, m.data(), &n, w.data(), &query, &lwork, rwork.data(),
         &info, 1, 1);
  lwork = static_cast<int>(query.real());
  std::vector<std::complex<double>> work(lwork > 0 ? lwork : 1);
  zheev_("V", "U", &n, m.data(), &n, w.data(), work.data(), &lwork,
         rwork.data(), &info, 1, 1);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("zheev failed, info=", info));
  }
  HermitianEigen out;
  out.values.resize(k);
  out.vectors.resize(static_cast<size_t>(n) * k);
  for (int c = 0; c < k; ++c) {
    const int src = n - 1 - c;
    out.values[c] = w[src];
    for (int r = 0; r < n; ++r) {
      out.vectors[static_cast<size_t>(r) * k + c] =
          m[r + static_cast<size_t>(src) * n];
    }
  }
  return out;
}

absl::StatusOr<SymmetricRoots> SymmetricSquareRoots(
    const std::vector<double>& a, int n, double floor_rel) {
  auto e = TopEigenSymmetric(a, n, n);
  if (!e.ok()) return e.status();
  const double floor = std::max(e->values[0], 1e-300) * floor_rel;
  SymmetricRoots out;
  out.sqrt.assign(a.size(), 0.0);
  out.inv_sqrt.assign(a.size(), 0.0);
  for (int c = 0; c < n; ++c) {
    const double lam = std::max(e->values[c], floor);
    const double s = std::sqrt(lam);
    for (int i = 0; i < n; ++i) {
      const double vi = e->vectors[static_cast<size_t>(i) * n + c];
      for (int j = 0; j < n; ++j) {
        const double uu = vi * e->vectors[static_cast<size_t>(j) * n + c];
        out.sqrt[static_cast<size_t>(i) * n + j] += uu * s;
        out.inv_sqrt[static_cast<size_t>(i) * n + j] += uu / s;
      }
    }
  }
  return out;
}

std::vector<double> DenseProduct(const std::vector<double>& a,
                                 const std::vector<double>& b, int n, int k,
                                 int m) {
  std::vector<double> c(static_cast<size_t>(n) * m, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int e = 0; e < k; ++e) {
      const double x = a[static_cast<size_t>(i) * k + e];
      for (int j = 0; j < m; ++j) {
        c[static_cast<size_t>(i) * m + j] +=
            x * b[static_cast<size_t>(e) * m + j];
      }
    }
  }
  return c;
}

absl::StatusOr<std::vector<double>> SolveSymmetricPositive(
    const std::vector<double>& a, int n, const std::vector<double>& b,
    int nrhs) {
  if (n <= 0 || nrhs <= 0 ||
      a.size() != static_cast<size_t>(n) * static_cast<size_t>(n) ||
      b.size() != static_cast<size_t>(n) * static_cast<size_t>(nrhs)) {
    return absl::InvalidArgumentError(
        absl::StrCat("solve: need a [n, n] and b [n, nrhs]; got ", a.size(),
                     " and ", b.size(), " values, n=", n, ", nrhs=", nrhs));
  }
  // Symmetric a: row-major == column-major. b to column-major [n, nrhs].
  std::vector<double> m(a);
  std::vector<double> x(b.size());
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < nrhs; ++c) {
      x[r + static_cast<size_t>(c) * n] = b[static_cast<size_t>(r) * nrhs + c];
    }
  }
  int info = 0;
  dposv_("U", &n, &nrhs, m.data(), &n, x.data(), &n, &info, 1);
  if (info != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "solve: matrix is not positive definite (dposv info=", info, ")"));
  }
  std::vector<double> out(b.size());
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < nrhs; ++c) {
      out[static_cast<size_t>(r) * nrhs + c] =
          x[r + static_cast<size_t>(c) * n];
    }
  }
  return out;
}

std::vector<double> SquareSubmatrix(const std::vector<double>& a, int n,
                                    const std::vector<int>& idx) {
  const size_t m = idx.size();
  std::vector<double> out(m * m);
  for (size_t r = 0; r < m; ++r) {
    for (size_t c = 0; c < m; ++c) {
      out[r * m + c] = a[static_cast<size_t>(idx[r]) * n + idx[c]];
    }
  }
  return out;
}

void PutDiagonalBlock(const std::vector<double>& b, int m, int at, int n,
                      std::vector<double>* a) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      (*a)[static_cast<size_t>(at + i) * n + at + j] =
          b[static_cast<size_t>(i) * m + j];
    }
  }
}

absl::StatusOr<std::vector<double>> TopEigenRows(const std::vector<double>& a,
                                                 int n, int k) {
  auto e = TopEigenSymmetric(a, n, k);
  if (!e.ok()) return e.status();
  std::vector<double> rows(static_cast<size_t>(k) * n);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < n; ++j) {
      rows[static_cast<size_t>(i) * n + j] =
          e->vectors[static_cast<size_t>(j) * k + i];
    }
  }
  return rows;
}

}  // namespace latentkv::model::transform
