#include "model/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "model/tokenizer/bpe_pretokenizer.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') map to themselves, the other 68 bytes to U+0100.. in order.
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  absl::flat_hash_map<uint32_t, uint8_t> from_unicode;
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : next++;
      AppendUtf8(cp, &to_unicode[b]);
      from_unicode[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMap& GetByteMap() {
  static const ByteMap* map = new ByteMap();
  return *map;
}

// Decodes one UTF-8 character at s[*pos] (valid UTF-8 assumed; a stray
// byte decodes as itself).
uint32_t NextCodePoint(std::string_view s, size_t* pos) {
  const uint8_t lead = static_cast<uint8_t>(s[*pos]);
  int extra = lead < 0x80 ? 0 : lead < 0xE0 ? 1 : lead < 0xF0 ? 2 : 3;
  if (lead >= 0x80 && lead < 0xC0) extra = 0;
  if (*pos + extra >= s.size()) extra = 0;
  uint32_t cp = extra == 0   ? lead
                : extra == 1 ? (lead & 0x1F)
                : extra == 2 ? (lead & 0x0F)
                             : (lead & 0x07);
  for (int k = 1; k <= extra; ++k) {
    cp = (cp << 6) | (static_cast<uint8_t>(s[*pos + k]) & 0x3F);
  }
  *pos += extra + 1;
  return cp;
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
         static_cast<uint32_t>(b);
}

struct Merge {
  int32_t rank;
  int32_t result;
};

class BpeTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(BpeVocab vocab);

  std::vector<int32_t> Encode(std::string_view text,
                              bool add_bos) const override;
  std::string TokenBytes(int32_t prev, int32_t token) const override;
  int32_t vocab_size() const override {
    return static_cast<int32_t>(tokens_.size());
  }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  bool add_bos() const override { return add_bos_; }

 private:
  BpeTokenizer() = default;
  void EncodeText(std::string_view text, std::vector<int32_t>* ids) const;
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  // TokenBytes of each token, precomputed.
  std::vector<std::string> bytes_;
  absl::flat_hash_map<std::string, int32_t> token_ids_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Id of each byte's mapped character; -1 when it is not a token.
  std::array<int32_t, 256> byte_ids_;
  // Special tokens by first byte, longest first.
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> specials_;
  bool has_specials_ = false;
  PreTokenizerKind pre_ = PreTokenizerKind::kGpt2;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  bool add_bos_ = false;
  bool ignore_merges_ = false;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> BpeTokenizer::Create(
    BpeVocab vocab) {
  const size_t n = vocab.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("BPE vocab has no tokens");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("BPE vocab too large");
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE vocab has ", n, " tokens but ",
                     vocab.token_types.size(), " token types"));
  }
  auto pre = PreTokenizerFromName(vocab.pre);
  if (!pre.ok()) return pre.status();
  const int32_t size = static_cast<int32_t>(n);
  for (const auto& [name, id] :
       {std::pair<const char*, int32_t>{"bos", vocab.bos_id},
        {"eos", vocab.eos_id},
        {"unk", vocab.unk_id}}) {
    if (id < -1 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE vocab ", name, " id ", id, " outside [-1, ", size, ")"));
    }
  }
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->pre_ = *pre;
  t->bos_id_ = vocab.bos_id;
  t->eos_id_ = vocab.eos_id;
  t->unk_id_ = vocab.unk_id;
  t->add_bos_ = vocab.add_bos;
  t->ignore_merges_ = vocab.ignore_merges;
  t->types_ = vocab.token_types.empty()
                  ? std::vector<int32_t>(n, kBpeTokenNormal)
                  : std::move(vocab.token_types);
  t->token_ids_.reserve(n);
  for (int32_t id = 0; id < size; ++id) {
    if (!t->token_ids_.emplace(vocab.tokens[id], id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE vocab has token '", vocab.tokens[id], "' twice (ids ",
          t->token_ids_[vocab.tokens[id]], " and ", id, ")"));
    }
  }
  t->merges_.reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const std::string& m = vocab.merges[rank];
    const size_t space = m.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == m.size() ||
        m.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE merge ", rank, " '", m, "' is not two tokens 'a b'"));
    }
    const std::string a = m.substr(0, space);
    const std::string b = m.substr(space + 1);
    auto ia = t->token_ids_.find(a);
    auto ib = t->token_ids_.find(b);
    auto iab = t->token_ids_.find(absl::StrCat(a, b));
    if (ia == t->token_ids_.end() || ib == t->token_ids_.end() ||
        iab == t->token_ids_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE merge ", rank, " '", m, "' names a token not in the vocab"));
    }
    t->merges_[PairKey(ia->second, ib->second)] =
        Merge{static_cast<int32_t>(rank), iab->second};
  }
  const ByteMap& map = GetByteMap();
  for (int b = 0; b < 256; ++b) {
    auto it = t->token_ids_.find(map.to_unicode[b]);
    t->byte_ids_[b] = it == t->token_ids_.end() ? -1 : it->second;
  }
  t->bytes_.resize(n);
  for (int32_t id = 0; id < size; ++id) {
    const std::string& tok = vocab.tokens[id];
    const int32_t type = t->types_[id];
    if (type == kBpeTokenControl || type == kBpeTokenUserDefined) {
      if (type == kBpeTokenUserDefined) t->bytes_[id] = tok;
      if (!tok.empty()) {
        t->specials_[static_cast<uint8_t>(tok[0])].emplace_back(tok, id);
        t->has_specials_ = true;
      }
      continue;
    }
    std::string& out = t->bytes_[id];
    size_t pos = 0;
    while (pos < tok.size()) {
      const size_t start = pos;
      const uint32_t cp = NextCodePoint(tok, &pos);
      auto it = map.from_unicode.find(cp);
      if (it != map.from_unicode.end()) {
        out.push_back(static_cast<char>(it->second));
      } else {
        out.append(tok, start, pos - start);
      }
    }
  }
  for (auto& bucket : t->specials_) {
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const auto& x, const auto& y) {
                       return x.first.size() > y.first.size();
                     });
  }
  t->tokens_ = std::move(vocab.tokens);
  return std::unique_ptr<Tokenizer>(std::move(t));
}

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text,
                                          bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  if (!has_specials_) {
    EncodeText(text, &ids);
    return ids;
  }
  size_t start = 0;  // of the pending stretch of ordinary text
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& bucket = specials_[static_cast<uint8_t>(text[pos])];
    int32_t match = -1;
    size_t match_len = 0;
    for (const auto& [str, id] : bucket) {
      if (text.substr(pos, str.size()) == str) {
        match = id;
        match_len = str.size();
        break;  // longest first
      }
    }
    if (match < 0) {
      ++pos;
      continue;
    }
    EncodeText(text.substr(start, pos - start), &ids);
    ids.push_back(match);
    pos += match_len;
    start = pos;
  }
  EncodeText(text.substr(start), &ids);
  return ids;
}

void BpeTokenizer::EncodeText(std::string_view text,
                              std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces;
  PreTokenize(pre_, text, &pieces);
  for (std::string_view piece : pieces) EncodePiece(piece, ids);
}

void BpeTokenizer::EncodePiece(std::string_view piece,
                               std::vector<int32_t>* ids) const {
  const ByteMap& map = GetByteMap();
  if (ignore_merges_) {
    std::string mapped;
    for (char ch : piece) mapped += map.to_unicode[static_cast<uint8_t>(ch)];
    auto it = token_ids_.find(mapped);
    if (it != token_ids_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols: a doubly linked list over the bytes' tokens.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (char ch : piece) {
    int32_t id = byte_ids_[static_cast<uint8_t>(ch)];
    if (id < 0) id = unk_id_;
    if (id < 0) continue;  // no token for this byte and no unk: dropped
    const int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, k - 1, k + 1});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  // Candidate merges (rank, left position, left id, right id); stale ones
  // (a side already merged away) are skipped when popped.
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t left_id;
    int32_t right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(sym[left].id, sym[right].id));
    if (it == merges_.end()) return;
    heap.push(Candidate{it->second.rank, left, sym[left].id, sym[right].id});
  };
  for (int32_t k = 0; k + 1 < static_cast<int32_t>(sym.size()); ++k) {
    consider(k);
  }
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = sym[c.left];
    if (left.id != c.left_id || left.next < 0) continue;
    Symbol& right = sym[left.next];
    if (right.id != c.right_id) continue;
    left.id = merges_.find(PairKey(c.left_id, c.right_id))->second.result;
    right.id = -1;  // removed
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = c.left;
    consider(left.prev);
    consider(c.left);
  }
  for (int32_t k = 0; k >= 0; k = sym[k].next) ids->push_back(sym[k].id);
}

std::string BpeTokenizer::TokenBytes(int32_t /*prev*/, int32_t token) const {
  if (token < 0 || token >= vocab_size()) return "";
  return bytes_[token];
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(BpeVocab vocab) {
  return BpeTokenizer::Create(std::move(vocab));
}

const std::string& BpeByteToUnicode(uint8_t b) {
  return GetByteMap().to_unicode[b];
}

}  // namespace latentkv::model
