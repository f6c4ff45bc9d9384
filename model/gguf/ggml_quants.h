// ggml's Q5_0 / Q5_1 and k-quant type ids (Q2_K .. Q6_K) and their block
// layouts, as GGUF files name them. The formats themselves (layouts,
// dequantization, quantization) are latentkv dtypes (common/dtype.h,
// common/quant_blocks.h); this maps ggml's ids onto them for the GGUF
// reader. Dequantization is bit-exact with gguf-py's numpy implementation
// (ggml_quants_test, against tools/reference/ggml_quants_reference.py).
// Thread-safety: pure functions.
#ifndef LATENTKV_MODEL_GGUF_GGML_QUANTS_H_
#define LATENTKV_MODEL_GGUF_GGML_QUANTS_H_

#include <cstdint>
#include <optional>

#include "common/dtype.h"

namespace latentkv::model {

// ggml_type ids of the formats above.
enum class GgmlQuant : uint32_t {
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
};

struct GgmlQuantLayout {
  int block_elems;  // 32 or 256
  int block_bytes;
  const char* name;  // "q4_K", ...
  DType dtype;       // the latentkv dtype with this layout
};

// The layout of ggml type `type`, or nullopt when it is none of the above.
std::optional<GgmlQuantLayout> GgmlQuantLayoutOf(uint32_t type);

// Dequantizes `n` elements (n a multiple of the block size; checked) of
// type `type` (one of the above; checked) from `src` into `dst`: the same
// as ConvertToF32 of the layout's dtype.
void DequantizeGgml(uint32_t type, const uint8_t* src, int64_t n, float* dst);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_GGUF_GGML_QUANTS_H_
