// LoadGgufTokenizer: the tokenizer in GGUF metadata (llama.cpp's
// tokenizer.ggml.* keys): byte-level BPE ("gpt2", here) or SentencePiece
// ("llama", gguf_sentencepiece.cc).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "model/gguf/gguf_file.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/gguf_sentencepiece.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

// An optional integer id key: -1 when absent.
absl::StatusOr<int32_t> OptionalId(const GgufFile& gguf, const char* key) {
  if (!gguf.Has(key)) return -1;
  auto v = gguf.GetInt(key);
  if (!v.ok()) return v.status();
  if (*v < -1 || *v > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", key, " = ", *v, " is not a token id"));
  }
  return static_cast<int32_t>(*v);
}

}  // namespace

absl::StatusOr<BpeVocab> ReadGgufBpeVocab(const GgufFile& gguf) {
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        gguf.path(),
        ": no tokenizer (tokenizer.ggml.model): ", model.status().message()));
  }
  if (*model == "llama") {
    return absl::UnimplementedError(absl::StrCat(
        gguf.path(),
        ": tokenizer.ggml.model 'llama' is a SentencePiece vocabulary, not "
        "byte-level BPE: LoadGgufTokenizer reads it; writing it as a HF "
        "tokenizer.json is not supported"));
  }
  if (*model != "gpt2") {
    return absl::UnimplementedError(
        absl::StrCat(gguf.path(), ": tokenizer.ggml.model '", *model,
                     "' is not supported; only 'gpt2' (byte-level BPE) "
                     "and 'llama' (SentencePiece)"));
  }
  BpeVocab vocab;
  auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  vocab.tokens = std::move(*tokens);
  if (gguf.Has("tokenizer.ggml.token_type")) {
    auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    vocab.token_types.reserve(types->size());
    for (int64_t t : *types) {
      vocab.token_types.push_back(static_cast<int32_t>(t));
    }
  }
  if (gguf.Has("tokenizer.ggml.merges")) {
    auto merges = gguf.GetStringArray("tokenizer.ggml.merges");
    if (!merges.ok()) return merges.status();
    vocab.merges = std::move(*merges);
  }
  vocab.pre = "default";  // llama.cpp's choice when the key is absent
  if (gguf.Has("tokenizer.ggml.pre")) {
    auto pre = gguf.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    vocab.pre = *pre;
  }
  // llama.cpp ignores merges for whole-token words with llama-bpe only.
  vocab.ignore_merges = vocab.pre == "llama-bpe" || vocab.pre == "llama3";
  auto bos = OptionalId(gguf, "tokenizer.ggml.bos_token_id");
  if (!bos.ok()) return bos.status();
  auto eos = OptionalId(gguf, "tokenizer.ggml.eos_token_id");
  if (!eos.ok()) return eos.status();
  auto unk = OptionalId(gguf, "tokenizer.ggml.unknown_token_id");
  if (!unk.ok()) return unk.status();
  vocab.bos_id = *bos;
  vocab.eos_id = *eos;
  vocab.unk_id = *unk;
  vocab.add_bos = false;  // when the key is absent
  if (gguf.Has("tokenizer.ggml.add_bos_token")) {
    auto add_bos = gguf.GetBool("tokenizer.ggml.add_bos_token");
    if (!add_bos.ok()) return add_bos.status();
    vocab.add_bos = *add_bos;
  }
  return vocab;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(
    const GgufFile& gguf) {
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (model.ok() && *model == "llama") {
    return LoadGgufSentencePieceTokenizer(gguf);
  }
  auto vocab = ReadGgufBpeVocab(gguf);
  if (!vocab.ok()) return vocab.status();
  auto tokenizer = MakeBpeTokenizer(*std::move(vocab));
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(gguf.path(), ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

}  // namespace latentkv::model
