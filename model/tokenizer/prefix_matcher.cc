#include "model/tokenizer/prefix_matcher.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace latentkv::model::internal {
namespace {

uint64_t EdgeKey(int32_t node, char byte) {
  return (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(byte);
}

}  // namespace

void PrefixMatcher::Add(std::string_view key, int32_t value) {
  if (key.empty() || value < 0) return;
  int32_t node = 0;
  for (char c : key) {
    auto [it, inserted] =
        edges_.try_emplace(EdgeKey(node, c), static_cast<int32_t>(0));
    if (inserted) {
      it->second = static_cast<int32_t>(values_.size());
      values_.push_back(-1);
    }
    node = it->second;
  }
  if (values_[node] < 0) {
    values_[node] = value;
    ++size_;
  }
  first_byte_[static_cast<uint8_t>(key[0])] = true;
}

PrefixMatcher::Result PrefixMatcher::Match(std::string_view text) const {
  Result best;
  if (text.empty() || !first_byte_[static_cast<uint8_t>(text[0])]) {
    return best;
  }
  int32_t node = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    auto it = edges_.find(EdgeKey(node, text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (values_[node] >= 0) best = {i + 1, values_[node]};
  }
  return best;
}

}  // namespace latentkv::model::internal
