// SentencePiece tokenizer (tokenizer.model) over our own model reader;
// TokenBytes comes from a per-id table built at load time so that streaming
// detokenization agrees with SentencePiece's DecodeIds for normal text.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

constexpr absl::string_view kWordBoundary = "\xE2\x96\x81";  // U+2581
// What SentencePiece decodes the unknown piece to (" ⁇ ").
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(
      std::unique_ptr<internal::SentencePieceModel> backend)
      : backend_(std::move(backend)),
        bos_id_(backend_->bos_id()),
        eos_id_(backend_->eos_id()) {
    const int n = backend_->piece_size();
    bytes_.resize(n);
    for (int id = 0; id < n; ++id) {
      const std::string& piece = backend_->IdToPiece(id);
      if (backend_->IsControl(id)) continue;  // BOS, EOS, PAD: nothing
      if (backend_->IsUnknown(id)) {
        bytes_[id] = std::string(kUnknownSurface);
      } else if (backend_->IsByte(id) && piece.size() == 6 &&
                 HexDigit(piece[3]) >= 0 && HexDigit(piece[4]) >= 0) {
        // "<0xXX>"
        bytes_[id] = std::string(
            1, static_cast<char>(HexDigit(piece[3]) * 16 + HexDigit(piece[4])));
      } else {
        bytes_[id] = absl::StrReplaceAll(piece, {{kWordBoundary, " "}});
      }
    }
    // SentencePiece drops the space it put in front of the text.
    strip_first_space_ = backend_->strips_leading_space();
  }

  std::vector<int32_t> Encode(std::string_view text,
                              bool add_bos) const override {
    const std::vector<int> ids = backend_->Encode(text);
    std::vector<int32_t> tokens;
    tokens.reserve(ids.size() + 1);
    if (add_bos && bos_id_ >= 0) tokens.push_back(bos_id_);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    return tokens;
  }

  std::string TokenBytes(int32_t prev, int32_t token) const override {
    if (token < 0 || token >= vocab_size()) return "";
    const std::string& bytes = bytes_[token];
    const bool at_start = prev < 0 || prev == bos_id_;
    if (at_start && strip_first_space_ && !bytes.empty() && bytes[0] == ' ' &&
        !backend_->IsByte(token) && !backend_->IsUnknown(token)) {
      return bytes.substr(1);
    }
    return bytes;
  }

  int32_t vocab_size() const override {
    return static_cast<int32_t>(bytes_.size());
  }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

 private:
  std::unique_ptr<internal::SentencePieceModel> backend_;
  int32_t bos_id_;
  int32_t eos_id_;
  std::vector<std::string> bytes_;  // [vocab_size] what each token decodes to
  bool strip_first_space_ = true;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& path) {
  std::string error;
  std::unique_ptr<internal::SentencePieceModel> backend =
      internal::SentencePieceModel::Load(path, &error);
  if (backend == nullptr) {
    if (error.find("No such file") != std::string::npos ||
        error.find("NOT_FOUND") != std::string::npos) {
      return absl::NotFoundError(
          absl::StrCat("cannot load SentencePiece model ", path, ": ", error));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", path, ": ", error));
  }
  return std::make_unique<SentencePieceTokenizer>(std::move(backend));
}

}  // namespace latentkv::model
