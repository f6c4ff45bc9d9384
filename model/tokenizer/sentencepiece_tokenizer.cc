// SentencePiece tokenizer over our own model reader (sentencepiece_model.h);
// see sentencepiece_tokenizer.h.
#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/prefix_matcher.h"
#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

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
  SentencePieceTokenizer(std::unique_ptr<internal::SentencePieceModel> backend,
                         const SentencePieceTokenizerOptions& options)
      : backend_(std::move(backend)),
        bos_id_(backend_->bos_id()),
        eos_id_(backend_->eos_id()),
        add_bos_(options.add_bos) {
    const int n = backend_->piece_size();
    bytes_.resize(n);
    for (int id = 0; id < n; ++id) {
      const std::string& piece = backend_->IdToPiece(id);
      if (backend_->IsControl(id)) {
        // BOS, EOS, PAD: nothing.
      } else if (backend_->IsUnknown(id)) {
        bytes_[id] = std::string(kUnknownSurface);
      } else if (backend_->IsByte(id) && piece.size() == 6 &&
                 HexDigit(piece[3]) >= 0 && HexDigit(piece[4]) >= 0) {
        // "<0xXX>"
        bytes_[id] = std::string(
            1, static_cast<char>(HexDigit(piece[3]) * 16 + HexDigit(piece[4])));
      } else {
        bytes_[id] = absl::StrReplaceAll(piece, {{kWordBoundary, " "}});
      }
      if (options.split_special_pieces &&
          (backend_->IsControl(id) || backend_->IsUnknown(id))) {
        specials_.Add(piece, id);
      }
    }
    // SentencePiece drops the space it put in front of the text.
    strip_first_space_ = backend_->strips_leading_space();
  }

  std::vector<int32_t> Encode(std::string_view text,
                              bool add_bos) const override {
    std::vector<int32_t> tokens;
    if (add_bos && bos_id_ >= 0) tokens.push_back(bos_id_);
    size_t start = 0;  // of the pending stretch of ordinary text
    for (size_t pos = 0; !specials_.empty() && pos < text.size();) {
      const internal::PrefixMatcher::Result m =
          specials_.Match(text.substr(pos));
      if (m.length == 0) {
        ++pos;
        continue;
      }
      EncodeStretch(text.substr(start, pos - start), &tokens);
      tokens.push_back(m.value);
      pos += m.length;
      start = pos;
    }
    EncodeStretch(text.substr(start), &tokens);
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
  bool add_bos() const override { return add_bos_; }

 private:
  void EncodeStretch(std::string_view text,
                     std::vector<int32_t>* tokens) const {
    if (text.empty()) return;
    const std::vector<int> ids = backend_->Encode(text);
    tokens->insert(tokens->end(), ids.begin(), ids.end());
  }

  std::unique_ptr<internal::SentencePieceModel> backend_;
  int32_t bos_id_;
  int32_t eos_id_;
  bool add_bos_;
  std::vector<std::string> bytes_;  // [vocab_size] what each token decodes to
  bool strip_first_space_ = true;
  // Control and unknown pieces cut out of raw text (split_special_pieces).
  internal::PrefixMatcher specials_;
};

// The options of HF's slow-tokenizer layout: tokenizer_config.json beside
// the model file, when present, gives add_bos_token (default true) and
// split_special_tokens (default false: special pieces in the text are their
// ids). Without it, libsentencepiece's own behaviour (no splitting).
absl::Status ReadTokenizerConfig(const std::string& model_path,
                                 SentencePieceTokenizerOptions* options) {
  const std::filesystem::path path =
      std::filesystem::path(model_path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j =
      nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is not a JSON object"));
  }
  bool split_special_tokens = false;
  for (auto [key, out, fallback] :
       {std::tuple<const char*, bool*, bool>{"add_bos_token", &options->add_bos,
                                             true},
        {"split_special_tokens", &split_special_tokens, false}}) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null() && !it->is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": ", key, " is not a boolean"));
    }
    *out = it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
  }
  options->split_special_pieces = !split_special_tokens;
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Tokenizer> MakeSentencePieceTokenizer(
    std::unique_ptr<internal::SentencePieceModel> model,
    const SentencePieceTokenizerOptions& options) {
  return std::make_unique<SentencePieceTokenizer>(std::move(model), options);
}

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
  SentencePieceTokenizerOptions options;
  absl::Status s = ReadTokenizerConfig(path, &options);
  if (!s.ok()) return s;
  return MakeSentencePieceTokenizer(std::move(backend), options);
}

}  // namespace latentkv::model
