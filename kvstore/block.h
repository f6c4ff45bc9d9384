// A KV block as the store holds it: a chain-keyed run of block_tokens
// prompt tokens and, per layer, its pages in the layout's codec.
// Thread-safety: plain values.
#ifndef LATENTKV_KVSTORE_BLOCK_H_
#define LATENTKV_KVSTORE_BLOCK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kvstore/chain_key.h"

namespace latentkv::kvstore {

// One layer's pages of one block, in the layout's codec (opaque bytes here).
struct LayerPayload {
  uint32_t layer = 0;    // < num_layers, unique within a block
  bool present = false;  // false: dropped by a residency policy; data empty
  std::string data;
  uint64_t checksum = 0;  // PayloadChecksum(data) (chain_key.h); checked
                          // by Put and by readers
  // Sets checksum from data.
  void Seal() { checksum = PayloadChecksum(data.data(), data.size()); }
  bool Intact() const {
    return checksum == PayloadChecksum(data.data(), data.size());
  }
};

struct Block {
  BlockKey key = 0;                  // == ChainKey(parent, tokens)
  BlockKey parent = 0;               // 0 for a prompt's first block
  std::vector<int32_t> tokens;       // [block_tokens]
  std::vector<LayerPayload> layers;  // any order; unlisted layers are absent
  // The KV heads the payloads hold, [head_begin, head_end) of the layout's
  // num_kv_heads; both 0 (default): every head. A block written in head
  // parts (a tensor-parallel rank's heads, kvstore/head_parts.h) is held
  // back until every head has arrived.
  uint32_t head_begin = 0;
  uint32_t head_end = 0;

  // Sum of the layers' data sizes: what the capacity counts.
  int64_t PayloadBytes() const;
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_BLOCK_H_
