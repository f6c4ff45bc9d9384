// Our reader of SentencePiece model files (tokenizer.model) and its encoder,
// written instead of linking Debian's libsentencepiece: that library bundles
// and exports its own copy of protobuf-lite, so a process that also links
// libprotobuf (every gRPC binary of ours) crashes during static
// initialisation. The file is the ModelProto protobuf; we parse the fields we
// need from the wire format directly.
//
// Supported: BPE and UNIGRAM models, byte fallback, the unknown piece,
// control pieces, user-defined pieces, and the normalizer's add_dummy_prefix /
// remove_extra_whitespaces / escape_whitespaces. Not supported: the NFKC
// precompiled charsmap: input is used as it is (models trained with
// --normalization_rule_name=identity, such as Llama's, encode exactly like
// SentencePiece; others may differ on text that NFKC would change).
// Thread-safety: immutable after Load; const methods are thread-safe.
#ifndef LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_MODEL_H_
#define LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace latentkv::model::internal {

class SentencePieceModel {
 public:
  enum class PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  // Parses a model file; nullptr with `*error` set ("No such file" when it
  // cannot be opened) on failure.
  static std::unique_ptr<SentencePieceModel> Load(const std::string& path,
                                                  std::string* error);
  // Parses the bytes of a model file.
  static std::unique_ptr<SentencePieceModel> Parse(std::string_view bytes,
                                                   std::string* error);

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
  // Id of a piece usable in segmentation (normal or user-defined), or -1.
  int Find(std::string_view piece) const;
  void EncodeBpe(std::string_view text, std::vector<int>* ids) const;
  void EncodeUnigram(std::string_view text, std::vector<int>* ids) const;
  // Appends `ch` (one UTF-8 character) as byte pieces or the unknown piece.
  void AppendUnknown(std::string_view ch, std::vector<int>* ids) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int> index_;  // usable pieces only
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
