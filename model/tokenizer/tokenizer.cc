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
#include "model/gguf/gguf_file.h"

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

namespace {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizerFile(
    const std::string& path) {
  auto gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return LoadGgufTokenizer(**gguf);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& path, int32_t vocab_size) {
  const std::filesystem::path dir(path);
  std::error_code ec;
  if (std::filesystem::is_regular_file(dir, ec) && dir.extension() == ".gguf") {
    return LoadGgufTokenizerFile(path);
  }
  const std::filesystem::path hf_json = dir / "tokenizer.json";
  if (std::filesystem::is_regular_file(hf_json, ec)) {
    return LoadHfTokenizerJson(hf_json.string());
  }
  const std::filesystem::path sentencepiece = dir / "tokenizer.model";
  if (std::filesystem::is_regular_file(sentencepiece, ec)) {
    return LoadSentencePieceTokenizer(sentencepiece.string());
  }
  const std::filesystem::path llama2c = dir / "tokenizer.bin";
  if (std::filesystem::is_regular_file(llama2c, ec)) {
    return LoadLlama2cTokenizer(llama2c.string(), vocab_size);
  }
  const std::vector<std::string> ggufs = GgufFilesIn(path);
  if (ggufs.size() == 1) return LoadGgufTokenizerFile(ggufs[0]);
  if (ggufs.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no tokenizer.json, tokenizer.model or tokenizer.bin in ", path,
        " and ", ggufs.size(), " *.gguf files: which one is ambiguous"));
  }
  return absl::NotFoundError(absl::StrCat(
      "no tokenizer.json, tokenizer.model, tokenizer.bin or *.gguf in ", path));
}

}  // namespace latentkv::model
