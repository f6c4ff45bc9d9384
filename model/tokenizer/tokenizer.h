// Tokenizers behind one interface: the llama2.c tokenizer (tokenizer.bin) and
// SentencePiece (tokenizer.model), plus streaming detokenization.
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

// Loads a SentencePiece model file. TokenBytes maps U+2581 to ' ', byte
// pieces to their byte, control pieces to "" and drops the leading space of
// the first piece (prev == BOS or prev < 0) when SentencePiece's own decoder
// does, so Decode(Encode(text)) == SentencePiece's DecodeIds(Encode(text)).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& path);

// Loads the tokenizer of a model directory: tokenizer.model (SentencePiece)
// if present, else tokenizer.bin (llama2.c, `vocab_size` tokens).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& model_dir, int32_t vocab_size);

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
