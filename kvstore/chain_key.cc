#include "kvstore/chain_key.h"

#include <xxhash.h>

#include <cstddef>

namespace latentkv::kvstore {

uint64_t PayloadChecksum(const void* data, size_t n) {
  return XXH3_64bits(data, n);
}

BlockKey ChainKey(BlockKey parent, const int32_t* tokens, int n) {
  if (n < 0) n = 0;
  // Explicit little-endian encoding: the key must not depend on the host.
  std::vector<unsigned char> buf(8 + 4 * static_cast<size_t>(n));
  for (int b = 0; b < 8; ++b)
    buf[b] = static_cast<unsigned char>(parent >> (8 * b));
  for (int i = 0; i < n; ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) {
      buf[8 + 4 * static_cast<size_t>(i) + b] =
          static_cast<unsigned char>(t >> (8 * b));
    }
  }
  const BlockKey h = XXH3_64bits(buf.data(), buf.size());
  return h == 0 ? kZeroKeyReplacement : h;
}

std::vector<BlockKey> PrefixKeys(absl::Span<const int32_t> tokens,
                                 int block_tokens) {
  std::vector<BlockKey> keys;
  if (block_tokens <= 0) return keys;
  const size_t blocks = tokens.size() / static_cast<size_t>(block_tokens);
  keys.reserve(blocks);
  BlockKey parent = 0;
  for (size_t i = 0; i < blocks; ++i) {
    parent = ChainKey(parent, tokens.data() + i * block_tokens, block_tokens);
    keys.push_back(parent);
  }
  return keys;
}

}  // namespace latentkv::kvstore
