// Blocks written in KV-head parts: each rank of a tensor-parallel group
// stores the payloads of its own KV heads under the block's chain key, and
// the store holds the block (visible to Lookup and Get, announced by a
// STORED event) only once every head has arrived. Readers ask for the head
// range they hold, whatever TP size wrote the block.
//
// The payload rule that makes heads separable: a present layer payload is
// head-major, one equal-size segment per KV head in order (the worker's
// "rows" codec: for each head, its block_tokens rows). A part holding heads
// [head_begin, head_end) carries head_end - head_begin segments per layer.
//
// Thread-safety: plain values; BlockStore calls PartialBlock under its lock.
#ifndef LATENTKV_KVSTORE_HEAD_PARTS_H_
#define LATENTKV_KVSTORE_HEAD_PARTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kvstore/block.h"

namespace latentkv::kvstore {

// A KV-head range [begin, end) of a layout's num_kv_heads, as blocks and
// Get requests name it: 0..0 means every head.
// True when the range is every head (0..0 or [0, num_kv_heads)).
bool IsEveryHead(uint32_t begin, uint32_t end, uint32_t num_kv_heads);
// INVALID_ARGUMENT (naming `where`) unless the range is 0..0 or satisfies
// begin < end <= num_kv_heads.
absl::Status CheckHeadRange(uint32_t begin, uint32_t end, uint32_t num_kv_heads,
                            const std::string& where);

// True when `b` holds every one of `num_kv_heads` heads.
bool HoldsAllHeads(const Block& b, uint32_t num_kv_heads);

// CheckHeadRange of `b`'s range, and every present layer payload splits
// into end - begin equal segments (INVALID_ARGUMENT naming `where`).
absl::Status ValidateHeadRange(const Block& b, uint32_t num_kv_heads,
                               const std::string& where);

// Heads [begin, end) of `whole` (a block holding all `num_kv_heads` heads):
// every present payload cut to those segments and resealed; the range
// recorded in the result. Requires begin < end <= num_kv_heads.
Block SliceHeads(const Block& whole, uint32_t num_kv_heads, uint32_t begin,
                 uint32_t end);

// The heads of one block that have arrived so far.
class PartialBlock {
 public:
  // An empty block of `first`'s key, parent and tokens.
  PartialBlock(const Block& first, uint32_t num_layers, uint32_t num_kv_heads,
               absl::Time now);

  // Takes the heads of `part` (same key; a validated range) that are not
  // here yet; heads already here are kept (their bytes are the same KV).
  // *added = payload bytes taken. FAILED_PRECONDITION, with nothing taken,
  // when `part` disagrees with earlier parts on which layers are present or
  // on a layer's per-head segment size (writers of another shape).
  absl::Status Add(const Block& part, int64_t* added);

  bool complete() const { return missing_ == 0; }
  // Whether `part`'s heads include every head still missing.
  bool CompletedBy(const Block& part) const;
  BlockKey key() const { return key_; }
  BlockKey parent() const { return parent_; }
  int64_t bytes() const { return bytes_; }
  absl::Time since() const { return since_; }

  // The whole block (every head, layers sealed). Requires complete().
  Block Assemble() const;

 private:
  struct Layer {
    int state = -1;        // -1: no part seen yet; 0 absent; 1 present
    int64_t segment = -1;  // bytes per head, once known
    std::vector<std::string> heads;  // [num_kv_heads]
  };

  BlockKey key_ = 0;
  BlockKey parent_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<Layer> layers_;
  std::vector<bool> have_;  // [num_kv_heads]
  uint32_t missing_ = 0;
  int64_t bytes_ = 0;
  absl::Time since_;
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_HEAD_PARTS_H_
