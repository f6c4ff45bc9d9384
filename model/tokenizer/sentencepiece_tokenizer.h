// The Tokenizer over a SentencePieceModel (sentencepiece_model.h), for a
// tokenizer.model file (LoadSentencePieceTokenizer in tokenizer.h) or a
// SentencePiece vocabulary in GGUF metadata (tokenizer.ggml.model "llama",
// gguf_sentencepiece.cc). Internal to latentkv_tokenizer and its tests.
//
// TokenBytes comes from a per-id table built at construction: U+2581 maps to
// ' ', byte pieces to their byte, control pieces to "", the unknown piece to
// " \u2047 ", and the first piece (prev == BOS or prev < 0) loses its leading
// space when SentencePiece's decoder drops it, so Decode(Encode(text)) ==
// SentencePiece's DecodeIds(Encode(text)).
//
// Thread-safety: immutable after construction; Encode and TokenBytes may be
// called from many threads at once.
#ifndef LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

#include <memory>

#include "model/tokenizer/sentencepiece_model.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {

struct SentencePieceTokenizerOptions {
  // Cut control pieces and the unknown piece out of the raw text before
  // SentencePiece encoding (leftmost, then longest match), each becoming its
  // id; the stretches between are encoded on their own (each gets the dummy
  // prefix when the model adds one). This is what HF tokenizers do with
  // special added tokens and llama.cpp with parse_special, and what a chat
  // template rendered to text ("<start_of_turn>user\n...") needs.
  // libsentencepiece itself never does it ("<s>" in text is plain text).
  // Default false: a tokenizer.model encodes exactly as libsentencepiece.
  bool split_special_pieces = false;
  // Tokenizer::add_bos().
  bool add_bos = true;
};

// Wraps `model` (not null).
std::unique_ptr<Tokenizer> MakeSentencePieceTokenizer(
    std::unique_ptr<internal::SentencePieceModel> model,
    const SentencePieceTokenizerOptions& options);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
