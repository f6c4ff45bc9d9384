// cuBLAS and cuBLASLt, loaded with dlopen on first use instead of linked.
//
// Why: both libraries carry large thread-local storage (cuBLASLt 13: 94 KB
// with 4 KB alignment, cuBLAS 12 KB). Linked as DT_NEEDED, that TLS is
// static: glibc carves it out of every thread's stack, and threads created
// with small stacks then fail to start. civetweb (under prometheus-cpp's
// Exposer, the metrics endpoint until it moved to httplib) started its
// threads with a fixed small stack, so every
// worker's /metrics failed with "null context when constructing
// CivetServer" once the worker linked cuBLAS (seen here, with --device cpu
// too). Loaded with dlopen the TLS is dynamic (allocated per thread on first
// use), and processes that never create a CUDA backend never load them.
//
// Thread-safety: LoadCublas is safe to call from any thread (loads once).
#ifndef LATENTKV_KERNELS_CUDA_CUBLAS_LOADER_H_
#define LATENTKV_KERNELS_CUDA_CUBLAS_LOADER_H_

#include <cublasLt.h>
#include <cublas_v2.h>

#include <string>

namespace latentkv::kernels::cuda {

// The entry points the backend uses (same signatures as the headers').
struct CublasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSgemm_v2) sgemm;
  decltype(&cublasLtCreate) lt_create;
  decltype(&cublasLtDestroy) lt_destroy;
  decltype(&cublasLtMatmulDescCreate) lt_desc_create;
  decltype(&cublasLtMatmulDescDestroy) lt_desc_destroy;
  decltype(&cublasLtMatmulDescSetAttribute) lt_desc_set;
  decltype(&cublasLtMatrixLayoutCreate) lt_layout_create;
  decltype(&cublasLtMatrixLayoutDestroy) lt_layout_destroy;
  decltype(&cublasLtMatmulPreferenceCreate) lt_pref_create;
  decltype(&cublasLtMatmulPreferenceDestroy) lt_pref_destroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) lt_pref_set;
  decltype(&cublasLtMatmulAlgoGetHeuristic) lt_heuristic;
  decltype(&cublasLtMatmul) lt_matmul;
};

// The loaded API, or nullptr with *error naming the library or symbol that
// could not be loaded. Searches the loader's path (LD_LIBRARY_PATH, the
// executable's RUNPATH), then the CUDA toolkit's library directory of the
// build.
const CublasApi* LoadCublas(std::string* error);

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_CUBLAS_LOADER_H_
