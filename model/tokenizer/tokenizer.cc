#include "model/tokenizer/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace latentkv::model {

std::string Tokenizer::Decode(const std::vector<int32_t>& tokens) const {
  StreamingDetokenizer detokenizer(*this, bos_id());
  size_t start = 0;
  if (!tokens.empty() && tokens[0] == bos_id()) start = 1;
  std::string text;
  for (size_t i = start; i < tokens.size(); ++i) {
    text += detokenizer.Push(tokens[i]);
  }
  text += detokenizer.Flush();
  return text;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& model_dir, int32_t vocab_size) {
  const std::filesystem::path dir(model_dir);
  std::error_code ec;
  const std::filesystem::path sentencepiece = dir / "tokenizer.model";
  if (std::filesystem::is_regular_file(sentencepiece, ec)) {
    return LoadSentencePieceTokenizer(sentencepiece.string());
  }
  const std::filesystem::path llama2c = dir / "tokenizer.bin";
  if (std::filesystem::is_regular_file(llama2c, ec)) {
    return LoadLlama2cTokenizer(llama2c.string(), vocab_size);
  }
  return absl::NotFoundError(
      absl::StrCat("no tokenizer.model or tokenizer.bin in ", model_dir));
}

}  // namespace latentkv::model
