// Block keys: a chained 64-bit hash of token prefixes.
//
// A prompt is cut into blocks of `block_tokens` tokens; block i's key hashes
// block i-1's key (its parent; 0 for the first block) and block i's token
// ids, so a key names the whole prefix up to and including its block. The
// hash is XXH3-64 (seed 0) over the parent key as 8 little-endian bytes
// followed by each token id as 4 little-endian bytes (two's complement):
// stable across processes, machines and releases of this code. A key is
// never 0 (0 means "no parent"); the one input hashing to 0 maps to
// kZeroKeyReplacement.
//
// Thread-safety: pure functions.
#ifndef LATENTKV_KVSTORE_CHAIN_KEY_H_
#define LATENTKV_KVSTORE_CHAIN_KEY_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace latentkv::kvstore {

using BlockKey = uint64_t;

// Stands in for a hash value of 0.
inline constexpr BlockKey kZeroKeyReplacement = 0x9e3779b97f4a7c15ULL;

// The key of the block holding tokens[0..n) whose parent has key `parent`
// (0: the block starts the prompt). n >= 0; tokens may be null when n == 0.
BlockKey ChainKey(BlockKey parent, const int32_t* tokens, int n);

// XXH3-64 (seed 0) of a layer payload: LayerPayload::checksum.
uint64_t PayloadChecksum(const void* data, size_t n);

// Keys of the full blocks of `tokens` (a trailing partial block gets none):
// result[i] = ChainKey(result[i-1] or 0, tokens + i*block_tokens,
// block_tokens). Empty when block_tokens <= 0.
std::vector<BlockKey> PrefixKeys(absl::Span<const int32_t> tokens,
                                 int block_tokens);

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_CHAIN_KEY_H_
