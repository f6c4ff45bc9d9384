// Test helpers for checking our SentencePiece tokenizers against the real
// libsentencepiece (through sentencepiece_backend.h): a ModelProto writer,
// the SentencePiece model a GGUF vocabulary stands for, a reference encoder
// and the texts the comparisons run on. Everything here is written
// independently of the code under test (no use of sentencepiece_model.h or
// gguf_sentencepiece.h).
//
// Thread-safety: ReferenceEncoder is immutable after Create; the functions
// are thread-safe.
#ifndef LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TEST_UTIL_H_
#define LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/gguf/gguf_file.h"
#include "model/gguf/gguf_writer.h"
#include "model/tokenizer/sentencepiece_backend.h"

namespace latentkv::model::test_util {

// ModelProto.SentencePiece.Type.
enum SpType {
  kSpNormal = 1,
  kSpUnknown = 2,
  kSpControl = 3,
  kSpUserDefined = 4,
  kSpUnused = 5,
  kSpByte = 6
};

// The ModelProto fields we write (sentencepiece_model.proto).
struct SpProto {
  std::vector<std::string> pieces;  // [n]
  std::vector<float> scores;        // [n]
  std::vector<int> types;           // [n] SpType
  int model_type = 2;               // 1 UNIGRAM, 2 BPE
  bool byte_fallback = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;
  int unk_id = 0;
  int bos_id = -1;
  int eos_id = -1;
};

// The wire-format bytes of a ModelProto holding `proto` (normalizer
// "identity", no charsmap).
std::string SerializeModelProto(const SpProto& proto);

// The SentencePiece model a GGUF SentencePiece vocabulary (tokenizer.ggml.*)
// stands for: types as stored, except that the token at unknown_token_id is
// UNKNOWN and user-defined tokens get U+2581 back for ' '; BPE, identity,
// add_dummy_prefix = add_space_prefix (default true), no whitespace
// clean-up, byte fallback when byte tokens exist.
absl::StatusOr<SpProto> SpProtoFromGguf(const GgufFile& gguf);

// libsentencepiece over a model written from an SpProto, after cutting its
// control and unknown pieces out of the raw text when `split_specials`
// (leftmost, then longest; the stretches between are encoded on their own).
class ReferenceEncoder {
 public:
  // Writes the model to `dir`/reference.model (`dir` must exist) and loads
  // it.
  static absl::StatusOr<std::unique_ptr<ReferenceEncoder>> Create(
      const SpProto& proto, const std::string& dir, bool split_specials = true);
  // Ids of `text` (no BOS); `*specials` counts the pieces cut out.
  std::vector<int32_t> Encode(std::string_view text, int* specials) const;
  // SentencePiece's own DecodeIds.
  std::string DecodeIds(const std::vector<int32_t>& ids) const;

 private:
  ReferenceEncoder() = default;
  std::unique_ptr<internal::SentencePieceBackend> sp_;
  // [256] the special pieces starting with each byte: (piece, id).
  std::vector<std::vector<std::pair<std::string, int>>> specials_;
};

// Texts every comparison runs on: English, spaces at either end and in
// runs, newlines and runs of them, tabs, digits, accents, CJK, emoji, HTML,
// chat-template control tokens written out, literal U+2581 and U+FFFD,
// invalid UTF-8, "".
std::vector<std::string> TrickyTexts();

// `count` texts of 0..24 `fragments` each, drawn with a fixed `seed`.
std::vector<std::string> RandomTexts(const std::vector<std::string>& fragments,
                                     int count, uint32_t seed);

// A synthetic vocabulary as GGUF stores it (tokenizer.ggml.*). Layout
// "gemma": <pad> <eos> <bos> <unk> (control, as llama.cpp's converter writes
// it) with explicit special-id keys and add_space_prefix false; layout
// "llama": <unk> (type unknown) <s> </s> and no special-id or
// add_space_prefix keys (the defaults apply). Both hold the control tokens
// <start_of_turn> <end_of_turn> <unused0>, user-defined newline, tab and
// space runs (spaces as "  ", the converter's form) and HTML tags, two
// unused pieces that merges pass through ("ll", "\u2581wor"), the 256 byte
// tokens, single characters and every substring of Words() (and of
// "\u2581" + word) with seeded scores in -40..-1 (many ties).
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  bool gemma = true;
  // The id of `token`, -1 when absent.
  int Id(const std::string& token) const;
};
const std::vector<std::string>& Words();
Vocab MakeVocab(bool gemma);

// Writes `v` as a GGUF file, without the keys in `skip`; `more` adds keys.
absl::Status WriteGguf(const Vocab& v, const std::string& path,
                       const std::set<std::string>& skip = {},
                       const std::function<void(GgufWriter*)>& more = nullptr);

// The first `max_lines` lines of the shared TinyStories excerpt.
std::vector<std::string> StoryLines(size_t max_lines);

}  // namespace latentkv::model::test_util

#endif  // LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_TEST_UTIL_H_
