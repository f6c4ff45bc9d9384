// Test helpers for the kvstore: a small layout and blocks with synthetic
// payloads. Header-only, for tests.
#ifndef LATENTKV_KVSTORE_TEST_UTIL_H_
#define LATENTKV_KVSTORE_TEST_UTIL_H_

#include <string>
#include <vector>

#include "kvstore/block_store.h"
#include "kvstore/chain_key.h"
#include "kvstore/layout.h"

namespace latentkv::kvstore::testing {

// 3 layers with distinct latent dims, 4 tokens per block.
inline KvLayout SmallLayout() {
  KvLayout l;
  l.model_id = "tiny";
  l.num_layers = 3;
  l.num_kv_heads = 2;
  l.d_qk = {16, 8, 8};
  l.d_vo = {32, 16, 8};
  l.dtype = "f32";
  l.block_tokens = 4;
  l.codec = "raw";
  return l;
}

// A block after `parent` with tokens base..base+block_tokens-1 whose layers
// hold `layer_bytes` bytes each (a pattern derived from the key), layer 1
// absent when `drop_layer1`.
inline Block MakeBlock(const KvLayout& layout, BlockKey parent, int base,
                       int layer_bytes, bool drop_layer1 = false) {
  Block b;
  b.parent = parent;
  for (uint32_t i = 0; i < layout.block_tokens; ++i) {
    b.tokens.push_back(base + static_cast<int>(i));
  }
  b.key = ChainKey(parent, b.tokens.data(), static_cast<int>(b.tokens.size()));
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    LayerPayload p;
    p.layer = l;
    p.present = !(drop_layer1 && l == 1);
    if (p.present) {
      p.data.resize(layer_bytes);
      for (int i = 0; i < layer_bytes; ++i) {
        p.data[i] = static_cast<char>((b.key >> (i % 64)) + l * 31 + i);
      }
    }
    p.Seal();
    b.layers.push_back(std::move(p));
  }
  return b;
}

// A chain of n blocks; block i has tokens base+i*block_tokens, ...
inline std::vector<Block> MakeChain(const KvLayout& layout, int n, int base,
                                    int layer_bytes, BlockKey parent = 0) {
  std::vector<Block> chain;
  for (int i = 0; i < n; ++i) {
    chain.push_back(MakeBlock(layout, parent,
                              base + i * static_cast<int>(layout.block_tokens),
                              layer_bytes));
    parent = chain.back().key;
  }
  return chain;
}

inline std::vector<BlockKey> KeysOf(const std::vector<Block>& blocks) {
  std::vector<BlockKey> keys;
  for (const Block& b : blocks) keys.push_back(b.key);
  return keys;
}

}  // namespace latentkv::kvstore::testing

#endif  // LATENTKV_KVSTORE_TEST_UTIL_H_
