// A thin wrapper over sentencepiece::SentencePieceProcessor that includes no
// Abseil header. sentencepiece_processor.h (0.1.97) declares
// `namespace absl { using std::string_view; }`, which clashes with Abseil's
// own absl::string_view class, so no translation unit may include both; this
// header is the bridge between them. Internal to latentkv_tokenizer (and its
// tests).
//
// Thread-safety: const methods may be called from many threads at once.
#ifndef LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_BACKEND_H_
#define LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_BACKEND_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace latentkv::model::internal {

class SentencePieceBackend {
 public:
  // Loads a .model file; nullptr with `*error` set on failure.
  static std::unique_ptr<SentencePieceBackend> Load(const std::string& path,
                                                    std::string* error);
  ~SentencePieceBackend();

  // Ids of `text` (no BOS/EOS). False with `*error` set on failure.
  bool Encode(std::string_view text, std::vector<int>* ids,
              std::string* error) const;
  // SentencePiece's own decoding (used as the reference in tests).
  std::string DecodeIds(const std::vector<int>& ids) const;

  int piece_size() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;  // -1 when the model has none
  const std::string& IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;

 private:
  explicit SentencePieceBackend(
      std::unique_ptr<sentencepiece::SentencePieceProcessor> processor);
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace latentkv::model::internal

#endif  // LATENTKV_MODEL_TOKENIZER_SENTENCEPIECE_BACKEND_H_
