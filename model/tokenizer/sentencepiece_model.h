// Our reader of SentencePiece model files (tokenizer.model) and its encoder,
// written instead of linking Debian's libsentencepiece: that library bundles
// and exports its own copy of protobuf-lite, so a process that also links
// libprotobuf (every gRPC binary of ours) crashes during static
// initialisation. The file is the ModelProto protobuf; we parse the fields we
// need from the wire format directly (sentencepiece_model_proto.cc). A model
// can also be built from its pieces directly (FromSpec: a SentencePiece
// vocabulary stored in GGUF metadata, gguf_sentencepiece.cc).
//
// Encode follows libsentencepiece 0.1.97 (checked against it in
// tokenizer_test and gguf_sentencepiece_test):
//   - normalization: user-defined pieces are matched in the raw text first
//     (longest match) and copied as they are; a byte that is not valid UTF-8
//     becomes U+FFFD; remove_extra_whitespaces drops leading and trailing
//     spaces and collapses runs; add_dummy_prefix puts a space in front;
//     escape_whitespaces turns ' ' into U+2581;
//   - BPE: the normalized text is split into characters, except that a
//     user-defined piece (longest match) is one frozen symbol that never
//     merges; then the adjacent pair whose concatenation is the piece of
//     highest score is merged, leftmost on ties, until none is left. Unused
//     pieces take part in merges but are split back into the two symbols they
//     were merged from;
//   - UNIGRAM: Viterbi over the pieces (unused pieces excluded);
//   - a character no piece covers becomes its byte pieces (byte fallback) or
//     the unknown piece (one for a run of such characters).
// Supported: BPE and UNIGRAM models, byte fallback, the unknown piece,
// control, user-defined and unused pieces, and the normalizer's
// add_dummy_prefix / remove_extra_whitespaces / escape_whitespaces. Not
// supported: the NFKC precompiled charsmap: input is used as it is (models
// trained with --normalization_rule_name=identity, such as Llama's and
// Gemma's, encode exactly like SentencePiece; others may differ on text that
// NFKC would change); the UNIGRAM scores SentencePiece gives user-defined
// pieces (their own score is used).
//
// Thread-safety: immutable after construction; const methods are
// thread-safe.
#ifndef LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_MODEL_H_
#define LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/prefix_matcher.h"

namespace latentkv::model::internal {

class SentencePieceModel {
 public:
  // ModelProto.SentencePiece.Type (also GGUF's token types 1..6).
  enum class PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  // Everything a model is made of; the defaults are ModelProto's.
  struct Spec {
    std::vector<std::string> pieces;  // [n] id = index
    std::vector<float> scores;        // [n] higher merges first (BPE)
    std::vector<PieceType> types;     // [n]
    ModelType model_type = ModelType::kUnigram;
    bool byte_fallback = false;
    bool add_dummy_prefix = true;
    bool remove_extra_whitespaces = true;
    bool escape_whitespaces = true;
    // Special ids; < n (negative: none).
    int unk_id = 0;
    int bos_id = 1;
    int eos_id = 2;
  };

  // Not copyable: index_ views the pieces' strings.
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // Parses a model file; nullptr with `*error` set ("No such file" when it
  // cannot be opened) on failure.
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path,
                                                  std::string* error);
  // Parses the bytes of a model file.
  static std::unique_ptr<SentencePieceModel> Parse(std::string_view bytes,
                                                   std::string* error);
  // Builds a model from `spec`; nullptr with `*error` set when it has no
  // pieces, scores or types of another length, a model type other than BPE
  // or UNIGRAM, a special id >= n, or a byte piece that is not "<0xHH>".
  // Empty pieces are kept (their ids decode to nothing) but never matched.
  // A piece listed twice: the first id is the one encoding gives.
  static std::unique_ptr<SentencePieceModel> FromSpec(Spec spec,
                                                      std::string* error);
  // The bytes of a model file holding `spec`: the ModelProto wire format
  // with every piece (piece, score, type), the TrainerSpec's model_type,
  // vocab_size, byte_fallback, unk/bos/eos ids and pieces (pad_id -1) and a
  // NormalizerSpec named "identity" (no charsmap) with add_dummy_prefix,
  // remove_extra_whitespaces and escape_whitespaces. Parse reads it back to
  // `spec`; libsentencepiece loads it (checked in tokenizer tests).
  static std::string Serialize(const Spec& spec);

  // Ids of `text` (no BOS/EOS).
  std::vector<int> Encode(std::string_view text) const;

  int piece_size() const { return static_cast<int>(pieces_.size()); }
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int unk_id() const { return unk_id_; }
  const std::string& IdToPiece(int id) const { return pieces_[id].piece; }
  PieceType type(int id) const { return pieces_[id].type; }
  bool IsControl(int id) const { return type(id) == PieceType::kControl; }
  bool IsUnknown(int id) const { return type(id) == PieceType::kUnknown; }
  bool IsByte(int id) const { return type(id) == PieceType::kByte; }
  // Whether decoding drops the space SentencePiece put in front of the text.
  bool strips_leading_space() const {
    return add_dummy_prefix_ || remove_extra_whitespaces_;
  }

 private:
  struct Piece {
    std::string piece;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  SentencePieceModel() = default;
  std::string Normalize(std::string_view text) const;
  // Id of a normal, user-defined or unused piece, or -1.
  int Find(std::string_view piece) const;
  void EncodeBpe(std::string_view text, std::vector<int>* ids) const;
  void EncodeUnigram(std::string_view text, std::vector<int>* ids) const;
  // Appends `ch` (one UTF-8 character) as byte pieces or the unknown piece
  // (nothing when the model has none).
  void AppendUnknown(std::string_view ch, std::vector<int>* ids) const;

  std::vector<Piece> pieces_;
  // Normal, user-defined and unused pieces (first id of each string); the
  // keys view pieces_' strings, which never move after construction.
  absl::flat_hash_map<absl::string_view, int> index_;
  PrefixMatcher user_defined_;  // user-defined pieces -> id
  int byte_ids_[256];
  ModelType model_type_ = ModelType::kUnigram;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int unk_id_ = 0, bos_id_ = 1, eos_id_ = 2;
  size_t max_piece_bytes_ = 1;
  float min_score_ = 0;
};

}  // namespace latentkv::model::internal

#endif  // LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_MODEL_H_
