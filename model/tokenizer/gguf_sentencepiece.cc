// SentencePiece vocabularies in GGUF (tokenizer.ggml.model "llama"); see
// gguf_sentencepiece.h.
//
// Why the model is rebuilt this way:
//   - BPE, not UNIGRAM: GGUF keeps no model type; llama.cpp's SPM tokenizer
//     (llm_tokenizer_spm) repeatedly merges the adjacent pair whose
//     concatenation is the token of highest score, leftmost on ties, which is
//     exactly SentencePiece's BPE encoder, and the models stored this way
//     (Llama 2, Mistral, Gemma) are BPE SentencePiece models.
//   - identity normalization, remove_extra_whitespaces false: llama.cpp
//     neither normalizes nor collapses spaces, and those models were trained
//     with --normalization_rule_name=identity (their tokenizer.model says
//     so); escape_whitespaces true (' ' becomes U+2581, as llama.cpp does).
//   - user-defined tokens: llama.cpp's converter (convert_hf_to_gguf.py,
//     "pre-normalize user-defined spaces", added for Gemma) replaces U+2581
//     by ' ' in them, because llama.cpp matches them in the raw text. In
//     libsentencepiece a user-defined piece is matched in the normalized
//     text, where every ' ' is already U+2581, so "  " would never match and
//     "a  b" would encode as [a, _, _b]; with U+2581 back ("\u2581\u2581",
//     as in Gemma's tokenizer.model) it is one frozen symbol, [a, 138, b]:
//     the same ids as llama.cpp and HF tokenizers.
//   - the unknown token: converters mark "<unk>" control (HF calls it
//     special); SentencePiece needs it to be the UNKNOWN piece (and decodes
//     it as " \u2047 ").
//   - control tokens in text: libsentencepiece encodes "<start_of_turn>" in
//     text as plain characters; HF tokenizers and llama.cpp (parse_special)
//     give its id, and the chat templates we render to text rely on that,
//     as the byte-level BPE tokenizer already does (bpe_tokenizer.h).
#include "model/tokenizer/gguf_sentencepiece.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "model/gguf/gguf_file.h"
#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using PieceType = internal::SentencePieceModel::PieceType;

// Far above any real vocabulary (Gemma's 262,144), far below int32.
constexpr size_t kMaxTokens = size_t{1} << 24;

absl::Status KeyError(const GgufFile& gguf, const char* key,
                      const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat(gguf.path(), ": GGUF ", key, " ", what));
}

// Reads an id key: `fallback` when absent; InvalidArgument unless in
// [-1, n).
absl::StatusOr<int> IdKey(const GgufFile& gguf, const char* key, int64_t n,
                          int fallback) {
  if (!gguf.Has(key)) return fallback;
  auto v = gguf.GetInt(key);
  if (!v.ok()) {
    return absl::InvalidArgumentError(std::string(v.status().message()));
  }
  if (*v < -1 || *v >= n) {
    return KeyError(gguf, key,
                    absl::StrCat("= ", *v, " is not a token id (", n,
                                 " tokens; -1 for none)"));
  }
  return static_cast<int>(*v);
}

absl::StatusOr<bool> BoolKey(const GgufFile& gguf, const char* key,
                             bool fallback) {
  if (!gguf.Has(key)) return fallback;
  auto v = gguf.GetBool(key);
  if (!v.ok()) {
    return absl::InvalidArgumentError(std::string(v.status().message()));
  }
  return *v;
}

}  // namespace

absl::StatusOr<GgufSentencePieceVocab> ReadGgufSentencePieceVocab(
    const GgufFile& gguf) {
  auto model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok() || *model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        gguf.path(), ": tokenizer.ggml.model is not 'llama' (SentencePiece)"));
  }
  GgufSentencePieceVocab vocab;
  internal::SentencePieceModel::Spec& spec = vocab.spec;
  auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(std::string(tokens.status().message()));
  }
  const size_t n = tokens->size();
  if (n == 0 || n > kMaxTokens) {
    return KeyError(
        gguf, "tokenizer.ggml.tokens",
        absl::StrCat("holds ", n, " tokens (1 to ", kMaxTokens, " supported)"));
  }
  spec.pieces = *std::move(tokens);
  spec.scores.assign(n, 0.0f);
  spec.types.assign(n, PieceType::kNormal);
  if (gguf.Has("tokenizer.ggml.scores")) {
    auto scores = gguf.GetFloatArray("tokenizer.ggml.scores");
    if (!scores.ok()) {
      return absl::InvalidArgumentError(std::string(scores.status().message()));
    }
    if (scores->size() != n) {
      return KeyError(
          gguf, "tokenizer.ggml.scores",
          absl::StrCat("has ", scores->size(), " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan((*scores)[i])) {
        return KeyError(gguf, "tokenizer.ggml.scores",
                        absl::StrCat("[", i, "] is NaN"));
      }
      spec.scores[i] = static_cast<float>((*scores)[i]);
    }
  }
  bool byte_tokens = false;
  if (gguf.Has("tokenizer.ggml.token_type")) {
    auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) {
      return absl::InvalidArgumentError(std::string(types.status().message()));
    }
    if (types->size() != n) {
      return KeyError(
          gguf, "tokenizer.ggml.token_type",
          absl::StrCat("has ", types->size(), " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = (*types)[i];
      if (t < 0 || t > 6) {
        return KeyError(gguf, "tokenizer.ggml.token_type",
                        absl::StrCat("[", i, "] = ", t, " is not 0..6"));
      }
      spec.types[i] = t == 0 ? PieceType::kNormal : static_cast<PieceType>(t);
      if (spec.types[i] == PieceType::kByte) byte_tokens = true;
      if (spec.types[i] == PieceType::kUserDefined) {
        spec.pieces[i] =
            absl::StrReplaceAll(spec.pieces[i], {{" ", "\xE2\x96\x81"}});
      }
    }
  }
  const int64_t size = static_cast<int64_t>(n);
  int first_unknown = -1;
  for (size_t i = 0; i < n && first_unknown < 0; ++i) {
    if (spec.types[i] == PieceType::kUnknown) {
      first_unknown = static_cast<int>(i);
    }
  }
  auto bos = IdKey(gguf, "tokenizer.ggml.bos_token_id", size, n > 1 ? 1 : -1);
  if (!bos.ok()) return bos.status();
  auto eos = IdKey(gguf, "tokenizer.ggml.eos_token_id", size, n > 2 ? 2 : -1);
  if (!eos.ok()) return eos.status();
  auto unk =
      IdKey(gguf, "tokenizer.ggml.unknown_token_id", size, first_unknown);
  if (!unk.ok()) return unk.status();
  auto add_space_prefix =
      BoolKey(gguf, "tokenizer.ggml.add_space_prefix", true);
  if (!add_space_prefix.ok()) return add_space_prefix.status();
  auto add_bos = BoolKey(gguf, "tokenizer.ggml.add_bos_token", true);
  if (!add_bos.ok()) return add_bos.status();
  spec.bos_id = *bos;
  spec.eos_id = *eos;
  spec.unk_id = *unk;
  if (spec.unk_id >= 0) spec.types[spec.unk_id] = PieceType::kUnknown;
  spec.model_type = internal::SentencePieceModel::ModelType::kBpe;
  spec.byte_fallback = byte_tokens;
  spec.add_dummy_prefix = *add_space_prefix;
  spec.remove_extra_whitespaces = false;
  spec.escape_whitespaces = true;
  vocab.options.split_special_pieces = true;
  vocab.options.add_bos = *add_bos;
  return vocab;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufSentencePieceTokenizer(
    const GgufFile& gguf) {
  auto vocab = ReadGgufSentencePieceVocab(gguf);
  if (!vocab.ok()) return vocab.status();
  std::string error;
  std::unique_ptr<internal::SentencePieceModel> model =
      internal::SentencePieceModel::FromSpec(std::move(vocab->spec), &error);
  if (model == nullptr) {
    // The only errors left are malformed byte tokens.
    return KeyError(gguf, "tokenizer.ggml.tokens", error);
  }
  return MakeSentencePieceTokenizer(std::move(model), vocab->options);
}

absl::Status WriteSentencePieceTokenizerDir(const GgufSentencePieceVocab& vocab,
                                            const std::string& dir,
                                            const std::string& chat_template) {
  const internal::SentencePieceModel::Spec& spec = vocab.spec;
  {
    std::string error;  // validates the vocabulary
    if (internal::SentencePieceModel::FromSpec(spec, &error) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("SentencePiece vocabulary: ", error));
    }
  }
  using OrderedJson = nlohmann::ordered_json;
  auto piece_or_null = [&](int id) -> OrderedJson {
    if (id < 0) return nullptr;
    return spec.pieces[id];
  };
  OrderedJson config;
  config["add_bos_token"] = vocab.options.add_bos;
  config["add_eos_token"] = false;
  config["bos_token"] = piece_or_null(spec.bos_id);
  config["eos_token"] = piece_or_null(spec.eos_id);
  config["unk_token"] = piece_or_null(spec.unk_id);
  config["split_special_tokens"] = !vocab.options.split_special_pieces;
  config["clean_up_tokenization_spaces"] = false;
  if (!chat_template.empty()) config["chat_template"] = chat_template;
  std::string config_text;
  try {
    config_text =
        config.dump(2, ' ', false, OrderedJson::error_handler_t::strict) + "\n";
  } catch (const OrderedJson::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "special tokens or chat template not valid UTF-8: ", e.what()));
  }
  const std::filesystem::path d(dir);
  for (const auto& [name, bytes] :
       {std::pair<const char*, std::string>{
            "tokenizer.model", internal::SentencePieceModel::Serialize(spec)},
        {"tokenizer_config.json", config_text}}) {
    const std::filesystem::path path = d / name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      return absl::InternalError(absl::StrCat("cannot write ", path.string()));
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::model
