#include "model/gguf/ggml_quants.h"

#include "common/check.h"

namespace latentkv::model {
namespace {

struct Format {
  GgmlQuant type;
  const char* name;
  DType dtype;
};

constexpr Format kFormats[] = {
    {GgmlQuant::kQ5_0, "q5_0", DType::kQ5_0},
    {GgmlQuant::kQ5_1, "q5_1", DType::kQ5_1},
    {GgmlQuant::kQ2_K, "q2_K", DType::kQ2_K},
    {GgmlQuant::kQ3_K, "q3_K", DType::kQ3_K},
    {GgmlQuant::kQ4_K, "q4_K", DType::kQ4_K},
    {GgmlQuant::kQ5_K, "q5_K", DType::kQ5_K},
    {GgmlQuant::kQ6_K, "q6_K", DType::kQ6_K},
};

}  // namespace

std::optional<GgmlQuantLayout> GgmlQuantLayoutOf(uint32_t type) {
  for (const Format& f : kFormats) {
    if (static_cast<uint32_t>(f.type) == type) {
      return GgmlQuantLayout{DTypeBlockElems(f.dtype), DTypeBlockBytes(f.dtype),
                             f.name, f.dtype};
    }
  }
  return std::nullopt;
}

void DequantizeGgml(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  const auto l = GgmlQuantLayoutOf(type);
  LATENTKV_CHECK(l.has_value(), "not a dequantizable ggml type ", type);
  LATENTKV_CHECK(n % l->block_elems == 0, n,
                 " elements is not whole blocks of ", l->name);
  ConvertToF32(src, l->dtype, n, dst);
}

}  // namespace latentkv::model
