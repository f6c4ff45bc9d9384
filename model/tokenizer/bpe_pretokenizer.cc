#include "model/tokenizer/bpe_pretokenizer.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "model/tokenizer/unicode_tables.h"

namespace latentkv::model {
namespace {

// A code point that stands for a byte of invalid UTF-8: in no class.
constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes `text` into code points; offsets[i] is the byte offset of cps[i]
// and offsets.back() == text.size().
void DecodeUtf8(std::string_view text, std::vector<uint32_t>* cps,
                std::vector<size_t>* offsets) {
  size_t pos = 0;
  while (pos < text.size()) {
    offsets->push_back(pos);
    const uint8_t lead = static_cast<uint8_t>(text[pos]);
    int extra = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if (lead < 0x80) {
      cps->push_back(lead);
      ++pos;
      continue;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      extra = 1, cp = lead & 0x1F, min = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      extra = 2, cp = lead & 0x0F, min = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      extra = 3, cp = lead & 0x07, min = 0x10000;
    } else {
      extra = -1;
    }
    bool ok = extra > 0 && pos + static_cast<size_t>(extra) < text.size();
    if (ok) {
      for (int k = 1; k <= extra; ++k) {
        const uint8_t b = static_cast<uint8_t>(text[pos + k]);
        if ((b & 0xC0) != 0x80) {
          ok = false;
          break;
        }
        cp = (cp << 6) | (b & 0x3F);
      }
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) {
      ok = false;
    }
    if (ok) {
      cps->push_back(cp);
      pos += extra + 1;
    } else {
      cps->push_back(kInvalid);
      ++pos;
    }
  }
  offsets->push_back(text.size());
}

// Code point classes of the regexes.
class Classes {
 public:
  explicit Classes(const std::vector<uint32_t>& cps) : cps_(cps) {}
  size_t size() const { return cps_.size(); }
  uint32_t at(size_t i) const { return cps_[i]; }
  bool L(size_t i) const {
    return i < cps_.size() && cps_[i] != kInvalid && IsUnicodeLetter(cps_[i]);
  }
  bool N(size_t i) const {
    return i < cps_.size() && cps_[i] != kInvalid && IsUnicodeNumber(cps_[i]);
  }
  bool S(size_t i) const {
    return i < cps_.size() && cps_[i] != kInvalid &&
           IsUnicodeWhiteSpace(cps_[i]);
  }
  // [^\s\p{L}\p{N}]
  bool Other(size_t i) const {
    return i < cps_.size() && !L(i) && !N(i) && !S(i);
  }
  bool CrLf(size_t i) const {
    return i < cps_.size() && (cps_[i] == '\r' || cps_[i] == '\n');
  }
  bool Is(size_t i, uint32_t c) const {
    return i < cps_.size() && cps_[i] == c;
  }

 private:
  const std::vector<uint32_t>& cps_;
};

// (?i) folding of the contraction letters: ASCII case, and U+017F LATIN
// SMALL LETTER LONG S folds to 's' (simple case folding).
uint32_t FoldContraction(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A' + 'a';
  if (c == 0x17F) return 's';
  return c;
}

// 's|'t|'re|'ve|'m|'ll|'d at i: the end, or 0 when none matches.
size_t MatchContraction(const Classes& c, size_t i, bool ignore_case) {
  if (!c.Is(i, '\'') || i + 1 >= c.size()) return 0;
  auto fold = [&](size_t k) {
    return ignore_case ? FoldContraction(c.at(k)) : c.at(k);
  };
  const uint32_t a = fold(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 >= c.size()) return 0;
  const uint32_t b = fold(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
      (a == 'l' && b == 'l')) {
    return i + 3;
  }
  return 0;
}

// \s+(?!\S)|\s+ at i (c.S(i) holds).
size_t MatchTrailingSpace(const Classes& c, size_t i) {
  size_t j = i;
  while (c.S(j)) ++j;
  if (j == c.size()) return j;   // the run reaches the end
  if (j - i >= 2) return j - 1;  // leave the last one for the next word
  return j;                      // a single space before \S: \s+
}

// One match of the GPT-2 regex at i < c.size(); returns its end (> i).
size_t MatchGpt2(const Classes& c, size_t i) {
  if (size_t e = MatchContraction(c, i, /*ignore_case=*/false)) return e;
  const size_t s = c.Is(i, ' ') ? i + 1 : i;  // the optional ' '
  if (c.L(s)) {                               // ` ?\p{L}+`
    size_t j = s;
    while (c.L(j)) ++j;
    return j;
  }
  if (c.N(s)) {  // ` ?\p{N}+`
    size_t j = s;
    while (c.N(j)) ++j;
    return j;
  }
  if (c.Other(s)) {  // ` ?[^\s\p{L}\p{N}]+`
    size_t j = s;
    while (c.Other(j)) ++j;
    return j;
  }
  return MatchTrailingSpace(c, i);  // c.S(i) holds here
}

// One match of the llama-3 regex (digit runs of at most `max_digits`).
size_t MatchLlama3(const Classes& c, size_t i, size_t max_digits) {
  if (size_t e = MatchContraction(c, i, /*ignore_case=*/true)) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!c.CrLf(i) && !c.L(i) && !c.N(i) && c.L(i + 1)) {
    size_t j = i + 1;
    while (c.L(j)) ++j;
    return j;
  }
  if (c.L(i)) {
    size_t j = i;
    while (c.L(j)) ++j;
    return j;
  }
  if (c.N(i)) {  // \p{N}{1,max}
    size_t j = i;
    while (j - i < max_digits && c.N(j)) ++j;
    return j;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const size_t s = c.Is(i, ' ') ? i + 1 : i;
  if (c.Other(s)) {
    size_t j = s;
    while (c.Other(j)) ++j;
    while (c.CrLf(j)) ++j;
    return j;
  }
  // \s*[\r\n]+: up to and including the last CR/LF of the whitespace run.
  size_t run_end = i;
  while (c.S(run_end)) ++run_end;
  for (size_t k = run_end; k > i; --k) {
    if (c.CrLf(k - 1)) return k;
  }
  return MatchTrailingSpace(c, i);
}

// Emits the pre-tokens of cps[begin, end) under the GPT-2 regex.
void SplitGpt2(const Classes& c, const std::vector<size_t>& offsets,
               std::string_view text, size_t begin, size_t end,
               std::vector<std::string_view>* out) {
  // The regex sees only the piece: match over a sub-range.
  std::vector<uint32_t> sub;
  sub.reserve(end - begin);
  for (size_t k = begin; k < end; ++k) sub.push_back(c.at(k));
  const Classes piece(sub);
  size_t i = 0;
  while (i < sub.size()) {
    const size_t j = MatchGpt2(piece, i);
    out->push_back(text.substr(offsets[begin + i],
                               offsets[begin + j] - offsets[begin + i]));
    i = j;
  }
}

}  // namespace

absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name) {
  if (name == "gpt2" || name == "default") return PreTokenizerKind::kGpt2;
  if (name == "smollm" || name == "starcoder" || name == "refact" ||
      name == "command-r" || name == "codeshell" || name == "exaone" ||
      name == "minerva") {
    return PreTokenizerKind::kSmollm;
  }
  if (name == "llama-bpe" || name == "llama3") return PreTokenizerKind::kLlama3;
  if (name == "qwen2") return PreTokenizerKind::kQwen2;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown BPE pre-tokenizer '", std::string(name),
                   "' (known: gpt2, default, smollm, starcoder, refact, "
                   "command-r, codeshell, exaone, minerva, llama-bpe, llama3, "
                   "qwen2)"));
}

std::string_view PreTokenizerName(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      return "gpt2";
    case PreTokenizerKind::kSmollm:
      return "smollm";
    case PreTokenizerKind::kLlama3:
      return "llama3";
    case PreTokenizerKind::kQwen2:
      return "qwen2";
  }
  return "gpt2";
}

std::string_view PreTokenizerSplitRegex(PreTokenizerKind kind) {
  if (kind == PreTokenizerKind::kQwen2) {
    return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
           "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|"
           "\\s+";
  }
  return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
         "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!"
         "\\S)|\\s+";
}

void PreTokenize(PreTokenizerKind kind, std::string_view text,
                 std::vector<std::string_view>* out) {
  std::vector<uint32_t> cps;
  std::vector<size_t> offsets;
  cps.reserve(text.size());
  offsets.reserve(text.size() + 1);
  DecodeUtf8(text, &cps, &offsets);
  const Classes c(cps);
  const size_t n = cps.size();
  auto emit = [&](size_t i, size_t j) {
    out->push_back(text.substr(offsets[i], offsets[j] - offsets[i]));
  };
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      SplitGpt2(c, offsets, text, 0, n, out);
      return;
    case PreTokenizerKind::kSmollm: {
      size_t begin = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!c.N(i)) continue;
        if (begin < i) SplitGpt2(c, offsets, text, begin, i, out);
        emit(i, i + 1);
        begin = i + 1;
      }
      if (begin < n) SplitGpt2(c, offsets, text, begin, n, out);
      return;
    }
    case PreTokenizerKind::kLlama3:
    case PreTokenizerKind::kQwen2: {
      const size_t max_digits = kind == PreTokenizerKind::kLlama3 ? 3 : 1;
      size_t i = 0;
      while (i < n) {
        const size_t j = MatchLlama3(c, i, max_digits);
        emit(i, j);
        i = j;
      }
      return;
    }
  }
}

}  // namespace latentkv::model
