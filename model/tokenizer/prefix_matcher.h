// Longest-prefix matching against a fixed set of byte strings: the
// user-defined pieces of a SentencePiece model (SentencePiece's own
// PrefixMatcher) and the special tokens cut out of raw text before encoding.
//
// A byte trie: Match costs one hash lookup per byte of the longest candidate
// prefix (a first-byte table rejects most positions at once), whatever the
// number of keys.
//
// Thread-safety: not thread-safe while keys are added; Match is const and
// may be called from many threads once building is done.
#ifndef LATENTKV_MODEL_TOKENIZER_PREFIX_MATCHER_H_
#define LATENTKV_MODEL_TOKENIZER_PREFIX_MATCHER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace latentkv::model::internal {

class PrefixMatcher {
 public:
  struct Result {
    size_t length = 0;   // bytes matched; 0 when no key is a prefix
    int32_t value = -1;  // the matched key's value; -1 when none
  };

  PrefixMatcher() { first_byte_.fill(false); }

  // Adds `key` with `value` (>= 0). Empty keys are ignored (they would match
  // everywhere without consuming anything); a key added twice keeps its first
  // value.
  void Add(std::string_view key, int32_t value);
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }

  // The longest key that is a prefix of `text`.
  Result Match(std::string_view text) const;

 private:
  // Node 0 is the root; edges_ maps (node << 8 | byte) to the child node.
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> values_ = {-1};  // [nodes] -1 where no key ends
  std::array<bool, 256> first_byte_;    // whether some key starts with it
  size_t size_ = 0;
};

}  // namespace latentkv::model::internal

#endif  // LATENTKV_MODEL_TOKENIZER_PREFIX_MATCHER_H_
