// The cache shapes the worker-side targets (fuzz_kv_transfer,
// fuzz_codebook, fuzz_kvstore) and their seed generator (seedgen.cc) share:
// 2 layers, 4 query heads over 2 KV heads, d_qk = d_vo = 4; layer 0 is a
// SpindleKV codebook layer, both keep a window of 4 queries.
#ifndef LATENTKV_TESTS_FUZZ_KV_SHAPES_H_
#define LATENTKV_TESTS_FUZZ_KV_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "latentkv/v1/worker.pb.h"
#include "worker/cache/kv_cache.h"

namespace latentkv::fuzz {

inline constexpr int32_t kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 4;
inline constexpr int32_t kWindow = 4, kBlockTokens = 2;

inline std::vector<worker::LayerKvShape> KvShapes() {
  return std::vector<worker::LayerKvShape>(kLayers, {kKvHeads, kDim, kDim});
}

// The KV dtypes the targets pick from with one input byte (fp8 needs the
// model's scales, so it is left out).
inline DType KvDType(uint8_t b) {
  constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
  return kDTypes[b % 3];
}

// The layout a worker of these shapes sends and expects in KV transfers
// (what worker/server/kv_transfer.h's TransferLayout gives: codec "rows",
// TP size 1).
inline latentkv::v1::KvLayout TransferLayoutOf(DType dtype) {
  latentkv::v1::KvLayout l;
  l.set_num_layers(kLayers);
  l.set_num_kv_heads(kKvHeads);
  for (int i = 0; i < kLayers; ++i) {
    l.add_d_qk(kDim);
    l.add_d_vo(kDim);
  }
  l.set_dtype(std::string(DTypeName(dtype)));
  l.set_codec("rows");
  l.set_tp_size(1);
  return l;
}

}  // namespace latentkv::fuzz

#endif  // LATENTKV_TESTS_FUZZ_KV_SHAPES_H_
