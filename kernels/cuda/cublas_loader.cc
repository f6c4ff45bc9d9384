// dlopen loader of cuBLAS and cuBLASLt (cublas_loader.h).
#include "kernels/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace latentkv::kernels::cuda {
namespace {

#define LATENTKV_STR2(x) #x
#define LATENTKV_STR(x) LATENTKV_STR2(x)

void* Open(const char* base, std::string* error) {
  const std::string name =
      std::string(base) + ".so." LATENTKV_STR(CUBLAS_VER_MAJOR);
  void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef LATENTKV_CUDA_LIBRARY_DIR
  if (h == nullptr) {
    const std::string path =
        std::string(LATENTKV_CUDA_LIBRARY_DIR) + "/" + name;
    h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
#endif
  if (h == nullptr) {
    const char* why = dlerror();
    *error = "cannot load " + name + ": " + (why != nullptr ? why : "?");
  }
  return h;
}

template <typename Fn>
bool Bind(void* lib, const char* symbol, Fn* fn, std::string* error) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, symbol));
  if (*fn == nullptr) *error = std::string("cuBLAS lacks ") + symbol;
  return *fn != nullptr;
}

struct Loaded {
  CublasApi api{};
  std::string error;
  bool ok = false;
};

Loaded Load() {
  Loaded l;
  void* blas = Open("libcublas", &l.error);
  if (blas == nullptr) return l;
  void* lt = Open("libcublasLt", &l.error);
  if (lt == nullptr) return l;
  CublasApi& a = l.api;
  std::string* e = &l.error;
  l.ok = Bind(blas, "cublasCreate_v2", &a.create, e) &&
         Bind(blas, "cublasDestroy_v2", &a.destroy, e) &&
         Bind(blas, "cublasSetStream_v2", &a.set_stream, e) &&
         Bind(blas, "cublasSetMathMode", &a.set_math_mode, e) &&
         Bind(blas, "cublasSgemm_v2", &a.sgemm, e) &&
         Bind(lt, "cublasLtCreate", &a.lt_create, e) &&
         Bind(lt, "cublasLtDestroy", &a.lt_destroy, e) &&
         Bind(lt, "cublasLtMatmulDescCreate", &a.lt_desc_create, e) &&
         Bind(lt, "cublasLtMatmulDescDestroy", &a.lt_desc_destroy, e) &&
         Bind(lt, "cublasLtMatmulDescSetAttribute", &a.lt_desc_set, e) &&
         Bind(lt, "cublasLtMatrixLayoutCreate", &a.lt_layout_create, e) &&
         Bind(lt, "cublasLtMatrixLayoutDestroy", &a.lt_layout_destroy, e) &&
         Bind(lt, "cublasLtMatmulPreferenceCreate", &a.lt_pref_create, e) &&
         Bind(lt, "cublasLtMatmulPreferenceDestroy", &a.lt_pref_destroy, e) &&
         Bind(lt, "cublasLtMatmulPreferenceSetAttribute", &a.lt_pref_set, e) &&
         Bind(lt, "cublasLtMatmulAlgoGetHeuristic", &a.lt_heuristic, e) &&
         Bind(lt, "cublasLtMatmul", &a.lt_matmul, e);
  return l;  // the libraries stay loaded for the life of the process
}

}  // namespace

const CublasApi* LoadCublas(std::string* error) {
  static const Loaded* loaded = new Loaded(Load());
  if (!loaded->ok) {
    *error = loaded->error;
    return nullptr;
  }
  return &loaded->api;
}

}  // namespace latentkv::kernels::cuda
