// Tokenizers behind one interface: the llama2.c tokenizer (tokenizer.bin),
// SentencePiece (tokenizer.model or GGUF metadata; sentencepiece_model.h)
// and byte-level BPE (GPT-2 family, from a HF tokenizer.json or GGUF
// metadata; bpe_tokenizer.h), plus streaming detokenization.
//
// Thread-safety: a loaded Tokenizer is immutable; Encode/Decode may be called
// from many threads at once. StreamingDetokenizer is per stream.
#ifndef LATENTKV_MODEL_TOKENIZER_TOKENIZER_H_
#define LATENTKV_MODEL_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::model {

class GgufFile;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, with BOS first when add_bos.
  virtual std::vector<int32_t> Encode(std::string_view text,
                                      bool add_bos) const = 0;
  // The raw bytes token `token` stands for when it follows `prev` (byte
  // fallback tokens give their byte; the llama2.c rule strips the leading
  // space of the first piece after BOS). BOS/EOS give "". May be a partial
  // UTF-8 sequence.
  virtual std::string TokenBytes(int32_t prev, int32_t token) const = 0;
  // Decodes a whole sequence (as the streaming detokenizer would, flushed):
  // a StreamingDetokenizer started at BOS over `tokens` (a leading BOS in
  // `tokens` is skipped), then Flush.
  virtual std::string Decode(const std::vector<int32_t>& tokens) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // Whether prompts should start with BOS (Encode(text, add_bos())). True
  // for llama2.c and SentencePiece; byte-level BPE vocabularies say (e.g.
  // GGUF tokenizer.ggml.add_bos_token, HF add_bos_token).
  virtual bool add_bos() const { return true; }
};

// Loads the llama2.c format: int32 max_token_length, then per token: f32
// score, int32 length, bytes. BOS=1, EOS=2; pieces "<0xXX>" are byte tokens
// (ids 3..258 must be "<0x00>".."<0xFF>"). `vocab_size` must match the file
// exactly; 0 means "as many tokens as the file holds". Encode gives the ids of
// llama2.c's run.c `encode` (dummy " " prefix, code points with byte
// fallback, greedy highest-score merges, leftmost on ties) in O(n log n).
// Errors: NotFound when the file cannot be opened; InvalidArgument when it is
// truncated, has a negative length or one above max_token_length, or holds a
// different number of tokens than `vocab_size`.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(
    const std::string& path, int32_t vocab_size);

// Loads a SentencePiece model file; with tokenizer_config.json beside it
// (HF's slow-tokenizer layout), add_bos_token (default true) and
// split_special_tokens (default false: control and unknown pieces written in
// the text become their ids, SentencePieceTokenizerOptions) are read from
// it; without one, text encodes exactly as libsentencepiece encodes it.
// InvalidArgument when that file is not a JSON object or those keys are not
// booleans. TokenBytes maps U+2581 to ' ', byte
// pieces to their byte, control pieces to "" and drops the leading space of
// the first piece (prev == BOS or prev < 0) when SentencePiece's own decoder
// does, so Decode(Encode(text)) == SentencePiece's DecodeIds(Encode(text)).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& path);

// Loads a HF tokenizer.json of a byte-level BPE model (model.type "BPE"):
// model.vocab (token -> id), model.merges ("a b" strings or [a, b] pairs),
// model.unk_token, model.ignore_merges, added_tokens (special: true ->
// control, false -> user-defined; their lstrip/rstrip/single_word options
// are ignored) and the pre_tokenizer, recognized by structure: ByteLevel
// (use_regex true, add_prefix_space false) -> gpt2;
// Sequence[Digits(individual_digits true), ByteLevel] -> smollm;
// Sequence[Split(Regex = the llama-3 or qwen2 pattern), ByteLevel(use_regex
// false)] -> llama3 / qwen2. BOS, EOS and add_bos come from
// tokenizer_config.json beside it when present (bos_token, eos_token as
// strings or {content}, add_bos_token), else BOS from a TemplateProcessing
// post_processor that starts with a special token (add_bos true), else
// none. Errors: NotFound (no file), InvalidArgument (bad JSON, another model
// type, normalizer or pre_tokenizer (named in the message), ids with gaps,
// an invalid vocab as MakeBpeTokenizer).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(
    const std::string& path);

// The tokenizer of a GGUF file's metadata: tokenizer.ggml.model "gpt2" is
// byte-level BPE (tokens, token_type, merges, pre, bos/eos/
// unknown_token_id, add_bos_token); "llama" is SentencePiece (tokens,
// scores, token_type, bos/eos/unknown_token_id, add_space_prefix,
// add_bos_token; gguf_sentencepiece.h: encodes as libsentencepiece over the
// model the vocabulary came from, control tokens in the text becoming their
// ids). Unimplemented for other models; InvalidArgument for missing or
// malformed keys.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(
    const GgufFile& gguf);

// Loads a tokenizer from `path`:
//   - a .gguf file: LoadGgufTokenizer;
//   - a directory holding tokenizer.json (HF, preferred), else
//     tokenizer.model (SentencePiece), else tokenizer.bin (llama2.c,
//     `vocab_size` tokens), else exactly one *.gguf file.
// NotFound when none applies (InvalidArgument for several *.gguf files).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& path, int32_t vocab_size);

// Turns a stream of token ids into text pieces, never emitting half a UTF-8
// character: bytes of an incomplete sequence are held until it completes;
// invalid bytes become U+FFFD.
class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this. `prev` is the token before the stream
  // (BOS for a fresh generation, or the last prompt token).
  StreamingDetokenizer(const Tokenizer& tokenizer, int32_t prev);
  // Text that became complete with `token` (may be empty).
  std::string Push(int32_t token);
  // Whatever is held back (incomplete bytes become U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  int32_t prev_;
  std::string pending_;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_TOKENIZER_H_
