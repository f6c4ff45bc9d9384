// A SentencePiece vocabulary stored in GGUF metadata (tokenizer.ggml.model
// "llama": Llama 2, Mistral, Gemma), rebuilt as the SentencePiece model it was
// converted from and encoded as libsentencepiece encodes that model.
//
// Keys read (llama.cpp's):
//   tokenizer.ggml.tokens        [n] strings (required; 1 <= n <= 2^24)
//   tokenizer.ggml.scores        [n] numbers (absent: all 0; NaN refused)
//   tokenizer.ggml.token_type    [n] integers 0..6 (absent: all normal; 0,
//                                    llama.cpp's "undefined", is normal)
//   tokenizer.ggml.bos_token_id / eos_token_id: in [-1, n) (-1: none;
//                                    absent: llama.cpp's defaults 1 and 2,
//                                    or none when >= n)
//   tokenizer.ggml.unknown_token_id: in [-1, n) (absent: the first token of
//                                    type unknown, else none)
//   tokenizer.ggml.add_space_prefix (bool; absent: true, as llama.cpp)
//   tokenizer.ggml.add_bos_token     (bool; absent: true, as llama.cpp)
//
// The SentencePiece model (why each choice, see gguf_sentencepiece.cc):
//   - model type BPE: llama.cpp's SPM tokenizer merges by score, which is
//     SentencePiece's BPE encoder; normalizer identity,
//     remove_extra_whitespaces false, escape_whitespaces true,
//     add_dummy_prefix = add_space_prefix; byte_fallback on when any token
//     has type byte ("<0xHH>");
//   - the token at unknown_token_id has type UNKNOWN (converters write
//     "<unk>" as a control token);
//   - user-defined tokens get U+2581 back for ' ' (llama.cpp's converter
//     writes "\u2581\u2581" as "  ": "pre-normalize user-defined spaces");
//   - the tokenizer cuts control tokens and the unknown token out of raw text
//     first (SentencePieceTokenizerOptions::split_special_pieces), so a
//     rendered chat template's "<start_of_turn>" is one token.
// Errors: InvalidArgument naming the key (missing or mistyped tokens, arrays
// whose length is not n, a NaN score, a type outside 0..6, an id outside
// [-1, n), a byte token that is not "<0xHH>", too many tokens).
//
// Thread-safety: the functions are thread-safe; see tokenizer.h for the
// Tokenizer.
#ifndef LATENTKV_MODEL_TOKENIZER_GGUF_SENTENCEPIECE_H_
#define LATENTKV_MODEL_TOKENIZER_GGUF_SENTENCEPIECE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {

class GgufFile;

struct GgufSentencePieceVocab {
  internal::SentencePieceModel::Spec spec;
  SentencePieceTokenizerOptions options;
};

// The model and tokenizer options of `gguf` (tokenizer.ggml.model must be
// "llama"; InvalidArgument otherwise).
absl::StatusOr<GgufSentencePieceVocab> ReadGgufSentencePieceVocab(
    const GgufFile& gguf);

// ReadGgufSentencePieceVocab, then the tokenizer over it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufSentencePieceTokenizer(
    const GgufFile& gguf);

// Writes `vocab` into the existing directory `dir` as HF's slow-tokenizer
// layout, which LoadTokenizer(dir) reads back to the same tokenizer:
//   tokenizer.model        the SentencePiece model (SentencePieceModel::
//                          Serialize; libsentencepiece loads it too);
//   tokenizer_config.json  add_bos_token, add_eos_token false, bos_token /
//                          eos_token / unk_token (the pieces, or null),
//                          split_special_tokens (false when control pieces
//                          in the text are cut out as their ids, HF's
//                          default), and chat_template when not empty.
// Errors: InvalidArgument for a vocabulary FromSpec refuses or special
// pieces / a template that are not valid UTF-8; Internal (I/O).
absl::Status WriteSentencePieceTokenizerDir(const GgufSentencePieceVocab& vocab,
                                            const std::string& dir,
                                            const std::string& chat_template);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_GGUF_SENTENCEPIECE_H_
