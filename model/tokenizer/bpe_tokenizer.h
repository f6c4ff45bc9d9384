// Byte-level BPE tokenizers (GPT-2 family: GPT-2, SmolLM, StarCoder,
// Llama 3, Qwen2) behind the Tokenizer interface, built from a BpeVocab
// that the GGUF reader (gguf_tokenizer.cc) or the HF tokenizer.json reader
// (hf_tokenizer_json.cc) fills.
//
// Encode matches HF tokenizers (and llama.cpp) exactly:
//   1. special tokens (type control or user-defined) are cut out of the raw
//      text first, leftmost and longest match first (HF added_tokens with
//      normalized=false, llama.cpp parse_special); each becomes its id;
//   2. every other stretch is pre-tokenized (bpe_pretokenizer.h);
//   3. each pre-token's bytes are mapped through GPT-2's bytes_to_unicode
//      and merged by BPE: repeatedly the adjacent pair of lowest merge rank,
//      leftmost on ties (O(n log n) per pre-token). With ignore_merges, a
//      pre-token that is itself a token is emitted whole first (HF
//      `ignore_merges`, llama.cpp for llama-bpe).
// A byte whose mapped character is not a token becomes unk_id (dropped when
// there is none).
//
// TokenBytes: normal tokens give the bytes of their characters under the
// inverse byte map (characters outside it give their own UTF-8); control
// tokens give "" (HF skip_special_tokens); user-defined tokens give their
// text. Out-of-range ids give "".
//
// Thread-safety: the tokenizer is immutable after construction; Encode and
// TokenBytes may be called from many threads.
#ifndef LATENTKV_MODEL_TOKENIZER_BPE_TOKENIZER_H_
#define LATENTKV_MODEL_TOKENIZER_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {

class GgufFile;

// GGUF token types (llama.cpp's llama_token_type).
enum BpeTokenType : int32_t {
  kBpeTokenNormal = 1,
  kBpeTokenUnknown = 2,
  kBpeTokenControl = 3,
  kBpeTokenUserDefined = 4,
  kBpeTokenUnused = 5,
  kBpeTokenByte = 6,
};

struct BpeVocab {
  // Token strings, id = index, in GPT-2 byte-to-unicode form ("Ġt" for
  // " t"); control and user-defined tokens hold their literal text. Must
  // be distinct.
  std::vector<std::string> tokens;
  // GGUF codes (BpeTokenType), one per token; empty = all normal.
  std::vector<int32_t> token_types;
  // "a b" (exactly one space), lowest rank first; a, b and ab must be
  // tokens. A pair listed twice takes its later rank (as HF does).
  std::vector<std::string> merges;
  // Pre-tokenizer name (PreTokenizerFromName), e.g. "smollm".
  std::string pre;
  // -1 = none; otherwise a token id.
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  // Whether prompts should start with BOS (Tokenizer::add_bos()).
  bool add_bos = false;
  // Emit a pre-token that is a whole token without merging (HF BPE
  // `ignore_merges`).
  bool ignore_merges = false;
};

// Builds the tokenizer. InvalidArgument for: no tokens, duplicate tokens,
// token_types of the wrong length, a merge without exactly one space or
// whose parts or concatenation are not tokens, an unknown pre-tokenizer
// name, and bos/eos/unk ids outside [-1, size).
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(BpeVocab vocab);

// The vocabulary of a HF tokenizer.json (see LoadHfTokenizerJson in
// tokenizer.h for what is read).
absl::StatusOr<BpeVocab> ReadHfTokenizerJson(const std::string& path);

// The vocabulary in GGUF metadata (tokenizer.ggml.model must be "gpt2":
// Unimplemented for "llama", a SentencePiece vocabulary that
// LoadGgufTokenizer reads; see LoadGgufTokenizer). pre defaults to "default"
// when tokenizer.ggml.pre is absent (llama.cpp's default), add_bos to false;
// ignore_merges is set for llama-bpe. Errors as LoadGgufTokenizer.
absl::StatusOr<BpeVocab> ReadGgufBpeVocab(const GgufFile& gguf);

// Writes `dir`/tokenizer.json (model BPE with vocab and merges, the
// pre_tokenizer structure of vocab.pre, a ByteLevel decoder, added_tokens
// for control (special) and user-defined (non-special) tokens) and
// `dir`/tokenizer_config.json (bos_token, eos_token, add_bos_token,
// chat_template when non-empty), loadable by HF tokenizers;
// LoadHfTokenizerJson of the result encodes exactly as MakeBpeTokenizer
// (vocab). `dir` must exist. Errors: InvalidArgument for an invalid vocab
// (as MakeBpeTokenizer), Internal when a file cannot be written.
absl::Status WriteHfTokenizerJson(const BpeVocab& vocab, const std::string& dir,
                                  const std::string& chat_template);

// The inverse of GPT-2's bytes_to_unicode: the UTF-8 of the character byte
// `b` maps to ("Ġ" for ' ').
const std::string& BpeByteToUnicode(uint8_t b);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_BPE_TOKENIZER_H_
