// The llama2.c tokenizer (tokenizer.bin): a scored vocabulary merged greedily
// by score, with byte fallback. Encoding gives the same ids as llama2.c's
// run.c `encode`, but looks pieces up in a hash map and merges with a
// priority queue over a linked list of symbols: O(n log n) instead of O(n^2).
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
// Byte b falls back to token b + kByteTokenOffset ("<0x00>" is token 3).
constexpr int32_t kByteTokenOffset = 3;
// run.c starts its search for the best pair at this score, so a merge whose
// score is not above it never happens.
constexpr float kMinMergeScore = -1e10f;
// run.c groups at most this many bytes into one code point.
constexpr size_t kMaxCodePointBytes = 4;

bool IsContinuationByte(char c) {
  return (static_cast<uint8_t>(c) & 0xC0) == 0x80;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a "<0xXX>" piece stands for, or nullopt for any other piece.
std::optional<uint8_t> ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') {
    return std::nullopt;
  }
  const int hi = HexDigit(piece[3]);
  const int lo = HexDigit(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores)
      : pieces_(std::move(pieces)), scores_(std::move(scores)) {
    ids_.reserve(pieces_.size());
    bytes_.resize(pieces_.size());
    for (size_t id = 0; id < pieces_.size(); ++id) {
      // With duplicate pieces the first id wins.
      ids_.emplace(pieces_[id], static_cast<int32_t>(id));
      if (id == kBosId || id == kEosId) continue;
      if (std::optional<uint8_t> byte = ParseBytePiece(pieces_[id])) {
        bytes_[id] = std::string(1, static_cast<char>(*byte));
      } else {
        bytes_[id] = pieces_[id];
      }
    }
    const int32_t space = Lookup(" ");
    dummy_prefix_ = space >= 0 ? space : ' ' + kByteTokenOffset;
  }

  std::vector<int32_t> Encode(std::string_view text,
                              bool add_bos) const override;
  std::string TokenBytes(int32_t prev, int32_t token) const override;

  int32_t vocab_size() const override {
    return static_cast<int32_t>(pieces_.size());
  }
  int32_t bos_id() const override { return kBosId; }
  int32_t eos_id() const override { return kEosId; }

 private:
  // The id of `piece`, or -1.
  int32_t Lookup(std::string_view piece) const {
    auto it = ids_.find(absl::string_view(piece.data(), piece.size()));
    return it == ids_.end() ? -1 : it->second;
  }

  std::vector<std::string> pieces_;  // [vocab_size]
  std::vector<float> scores_;        // [vocab_size]
  std::vector<std::string> bytes_;   // [vocab_size] what each token decodes to
  absl::flat_hash_map<std::string, int32_t> ids_;
  int32_t dummy_prefix_ = -1;  // the token of " "
};

std::vector<int32_t> Llama2cTokenizer::Encode(std::string_view text,
                                              bool add_bos) const {
  // Initial symbols, as run.c builds them (BOS takes part in merging there
  // too, although no real vocabulary has a piece that merges with it).
  std::vector<int32_t> symbols;
  symbols.reserve(text.size() + 2);
  if (add_bos) symbols.push_back(kBosId);
  if (!text.empty()) symbols.push_back(dummy_prefix_);
  for (size_t start = 0; start < text.size();) {
    size_t len = 1;
    while (start + len < text.size() && len < kMaxCodePointBytes &&
           IsContinuationByte(text[start + len])) {
      ++len;
    }
    const std::string_view code_point = text.substr(start, len);
    const int32_t id = Lookup(code_point);
    if (id >= 0) {
      symbols.push_back(id);
    } else {
      for (char c : code_point) {
        symbols.push_back(static_cast<uint8_t>(c) + kByteTokenOffset);
      }
    }
    start += len;
  }
  if (symbols.size() < 2) return symbols;

  // Doubly linked list over `symbols`; a merge keeps the left node.
  const int32_t n = static_cast<int32_t>(symbols.size());
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }

  struct Candidate {
    float score;
    int32_t left;  // node index; order of nodes = order in the text
    int32_t right;
    int32_t left_token;
    int32_t right_token;
    int32_t merged;
  };
  // Highest score first; on ties the leftmost pair, as run.c's scan picks.
  auto lower_priority = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>,
                      decltype(lower_priority)>
      queue(lower_priority);
  std::string buffer;
  auto try_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string& a = pieces_[symbols[left]];
    const std::string& b = pieces_[symbols[right]];
    buffer.assign(a);
    buffer.append(b);
    const int32_t merged = Lookup(buffer);
    if (merged < 0 || !(scores_[merged] > kMinMergeScore)) return;
    queue.push(Candidate{scores_[merged], left, right, symbols[left],
                         symbols[right], merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) try_pair(i, i + 1);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // Skip candidates that earlier merges made stale.
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        symbols[c.left] != c.left_token || symbols[c.right] != c.right_token) {
      continue;
    }
    symbols[c.left] = c.merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    try_pair(prev[c.left], c.left);
    try_pair(c.left, next[c.left]);
  }

  std::vector<int32_t> ids;
  ids.reserve(n);
  for (int32_t i = 0; i >= 0; i = next[i]) ids.push_back(symbols[i]);
  return ids;
}

std::string Llama2cTokenizer::TokenBytes(int32_t prev, int32_t token) const {
  if (token < 0 || token >= vocab_size()) return "";
  const std::string& bytes = bytes_[token];
  // run.c: after BOS, a piece's leading space (the dummy prefix) is dropped.
  // Byte pieces start with '<', so this never eats a raw 0x20 byte.
  if (prev == kBosId && !bytes.empty() && pieces_[token][0] == ' ') {
    return bytes.substr(1);
  }
  return bytes;
}

// Reads little-endian scalars out of a byte buffer, tracking the offset.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  size_t offset() const { return offset_; }
  size_t remaining() const { return data_.size() - offset_; }
  template <typename T>
  bool Read(T* value) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(value, data_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return true;
  }
  bool ReadBytes(size_t n, std::string* out) {
    if (remaining() < n) return false;
    out->assign(data_.data() + offset_, n);
    offset_ += n;
    return true;
  }

 private:
  std::string_view data_;
  size_t offset_ = 0;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseLlama2cTokenizer(
    std::string_view data, const std::string& path, int32_t vocab_size) {
  Reader reader(data);
  int32_t max_token_length = 0;
  if (!reader.Read(&max_token_length)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": truncated llama2.c tokenizer (no max_token_length header)"));
  }
  if (max_token_length <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid max_token_length ", max_token_length));
  }
  std::vector<std::string> pieces;
  std::vector<float> scores;
  if (vocab_size > 0) {
    pieces.reserve(vocab_size);
    scores.reserve(vocab_size);
  }
  for (int32_t id = 0;
       vocab_size == 0 ? reader.remaining() > 0 : id < vocab_size; ++id) {
    float score = 0;
    int32_t length = 0;
    if (!reader.Read(&score) || !reader.Read(&length)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": truncated at token ", id, " of ", vocab_size, " (offset ",
          reader.offset(), ", file size ", data.size(),
          "): the file holds fewer tokens than the model's vocab_size"));
    }
    if (length < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", id, " has negative length ", length));
    }
    if (length > max_token_length) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", id, " has length ", length,
                       " > max_token_length ", max_token_length));
    }
    std::string piece;
    if (!reader.ReadBytes(static_cast<size_t>(length), &piece)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": truncated in the bytes of token ", id, " (length ", length,
          ", offset ", reader.offset(), ", file size ", data.size(), ")"));
    }
    pieces.push_back(std::move(piece));
    scores.push_back(score);
  }
  if (reader.remaining() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": vocab_size mismatch: ", reader.remaining(),
        " bytes left after ", vocab_size,
        " tokens (the file holds more tokens than the model's vocab_size)"));
  }
  // Byte fallback needs "<0x00>".."<0xFF>" at ids 3..258.
  constexpr int32_t kMinVocab = 256 + kByteTokenOffset;
  if (static_cast<int32_t>(pieces.size()) < kMinVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": vocabulary of ", pieces.size(), " tokens is smaller than ",
        kMinVocab, " (BOS, EOS and 256 byte-fallback tokens)"));
  }
  for (int32_t b = 0; b < 256; ++b) {
    std::optional<uint8_t> byte = ParseBytePiece(pieces[b + kByteTokenOffset]);
    if (!byte.has_value() || *byte != b) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", b + kByteTokenOffset, " is \"",
                       pieces[b + kByteTokenOffset],
                       "\", expected the byte-fallback piece for byte ", b));
    }
  }
  return std::make_unique<Llama2cTokenizer>(std::move(pieces),
                                            std::move(scores));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(
    const std::string& path, int32_t vocab_size) {
  if (vocab_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("negative vocab_size ", vocab_size, " for ", path));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot open tokenizer ", path));
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) {
    return absl::DataLossError(absl::StrCat("error reading ", path));
  }
  return ParseLlama2cTokenizer(contents.str(), path, vocab_size);
}

}  // namespace latentkv::model
