// The KV layout descriptor: what a block's payload bytes mean. A store holds
// blocks of one layout; every Put/Lookup/Get names the layout it expects, and
// any difference is refused (FAILED_PRECONDITION naming the first differing
// field), so a worker never reads pages shaped for another model, codec,
// block size or tensor-parallel shard.
//
// Thread-safety: plain values and pure functions.
#ifndef LATENTKV_KVSTORE_LAYOUT_H_
#define LATENTKV_KVSTORE_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace latentkv::kvstore {

struct KvLayout {
  std::string model_id;
  uint32_t num_layers = 0;     // >= 1
  uint32_t num_kv_heads = 0;   // >= 1
  std::vector<uint32_t> d_qk;  // [num_layers] key head dim per layer, >= 1
  std::vector<uint32_t> d_vo;  // [num_layers] value head dim per layer, >= 1
  std::string dtype;           // element type name, e.g. "f32"; non-empty
  uint32_t block_tokens = 0;   // tokens per block, >= 1
  std::string codec;           // payload encoding ("raw", "spindle", ...)
  uint32_t tp_size = 1;        // >= 1
  uint32_t tp_rank = 0;        // < tp_size
  // [num_layers] position-free key channels per layer (the last nope_dims
  // of d_qk; partial rotary), each <= d_qk; empty (canonical when all are
  // 0): every key channel is rotary.
  std::vector<uint32_t> nope_dims;

  bool operator==(const KvLayout&) const = default;
};

// INVALID_ARGUMENT naming the offending field when `layout` cannot describe
// a cache (see the field comments).
absl::Status ValidateLayout(const KvLayout& layout);

// OK when `got` equals `want`; otherwise FAILED_PRECONDITION naming the
// first differing field in declaration order, e.g.
// "layout mismatch: d_vo[3] is 32, store holds 64".
absl::Status CheckSameLayout(const KvLayout& want, const KvLayout& got);

// One line for logs: "model_id=... layers=... block_tokens=...".
std::string LayoutDebugString(const KvLayout& layout);

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_LAYOUT_H_
