// StreamingDetokenizer: emits the longest complete, valid UTF-8 prefix of the
// bytes seen so far. Invalid bytes are replaced by U+FFFD per "maximal
// subpart" (Unicode 15, section 3.9): each maximal prefix of a well-formed
// sequence that cannot be completed becomes one U+FFFD.
#include <cstdint>
#include <string>
#include <string_view>

#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Looks at the sequence starting at s[0] (s non-empty). Returns its length n
// > 0 when it is complete and valid; 0 when it is a valid but incomplete
// prefix running to the end of `s`; -k when its first k bytes can never start
// a valid character (they become one U+FFFD).
int ClassifySequence(std::string_view s) {
  const uint8_t lead = static_cast<uint8_t>(s[0]);
  if (lead < 0x80) return 1;
  int continuations = 0;
  // Allowed range of the first continuation byte; later ones are 80..BF.
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuations = 1;
  } else if (lead == 0xE0) {
    continuations = 2;
    lo = 0xA0;  // no over-long forms
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    continuations = 2;
  } else if (lead == 0xED) {
    continuations = 2;
    hi = 0x9F;  // no surrogates
  } else if (lead == 0xF0) {
    continuations = 3;
    lo = 0x90;  // no over-long forms
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    continuations = 3;
  } else if (lead == 0xF4) {
    continuations = 3;
    hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // continuation byte, C0, C1 or F5..FF
  }
  for (int k = 1; k <= continuations; ++k) {
    if (static_cast<size_t>(k) >= s.size()) return 0;
    const uint8_t b = static_cast<uint8_t>(s[k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -k;
  }
  return continuations + 1;
}

}  // namespace

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer,
                                           int32_t prev)
    : tokenizer_(tokenizer), prev_(prev) {}

std::string StreamingDetokenizer::Push(int32_t token) {
  pending_ += tokenizer_.TokenBytes(prev_, token);
  prev_ = token;
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const int n = ClassifySequence(std::string_view(pending_).substr(pos));
    if (n == 0) break;  // hold the incomplete tail (at most 3 bytes)
    if (n > 0) {
      out.append(pending_, pos, n);
      pos += n;
    } else {
      out += kReplacementCharacter;
      pos += -n;
    }
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  if (pending_.empty()) return "";
  // What is held is a valid prefix of one character: one U+FFFD.
  pending_.clear();
  return std::string(kReplacementCharacter);
}

}  // namespace latentkv::model
