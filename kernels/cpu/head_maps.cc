// MapHeads (ops.h): each head's rows gathered into one contiguous block and
// multiplied by MatMul (its AVX2 kernels and threads), then scattered back.
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/ops.h"

namespace latentkv::kernels {

void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
              const float* maps, int64_t dout, float* y) {
  if (n <= 0 || heads <= 0 || din <= 0 || dout <= 0) return;
  // Per calling thread: the engine calls from one thread per model runner.
  thread_local std::vector<float> in, out;
  in.resize(static_cast<size_t>(n * din));
  out.resize(static_cast<size_t>(n * dout));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(&in[t * din], x + (t * heads + h) * din,
                  static_cast<size_t>(din) * sizeof(float));
    }
    WeightView w;
    w.data = maps + h * dout * din;
    w.dtype = DType::kF32;
    w.rows = dout;
    w.cols = din;
    MatMul(in.data(), n, w, out.data());
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(y + (t * heads + h) * dout, &out[t * dout],
                  static_cast<size_t>(dout) * sizeof(float));
    }
  }
}

}  // namespace latentkv::kernels
