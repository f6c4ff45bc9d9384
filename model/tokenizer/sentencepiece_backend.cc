// Includes sentencepiece_processor.h and must never include an Abseil header
// (see sentencepiece_backend.h).
#include "model/tokenizer/sentencepiece_backend.h"

#include <sentencepiece_processor.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace latentkv::model::internal {

SentencePieceBackend::SentencePieceBackend(
    std::unique_ptr<sentencepiece::SentencePieceProcessor> processor)
    : processor_(std::move(processor)) {}

SentencePieceBackend::~SentencePieceBackend() = default;

std::unique_ptr<SentencePieceBackend> SentencePieceBackend::Load(
    const std::string& path, std::string* error) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const sentencepiece::util::Status status = processor->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceBackend>(
      new SentencePieceBackend(std::move(processor)));
}

bool SentencePieceBackend::Encode(std::string_view text, std::vector<int>* ids,
                                  std::string* error) const {
  const sentencepiece::util::Status status = processor_->Encode(text, ids);
  if (!status.ok()) {
    *error = status.ToString();
    return false;
  }
  return true;
}

std::string SentencePieceBackend::DecodeIds(const std::vector<int>& ids) const {
  return processor_->DecodeIds(ids);
}

int SentencePieceBackend::piece_size() const {
  return processor_->GetPieceSize();
}
int SentencePieceBackend::bos_id() const { return processor_->bos_id(); }
int SentencePieceBackend::eos_id() const { return processor_->eos_id(); }
const std::string& SentencePieceBackend::IdToPiece(int id) const {
  return processor_->IdToPiece(id);
}
bool SentencePieceBackend::IsControl(int id) const {
  return processor_->IsControl(id);
}
bool SentencePieceBackend::IsUnknown(int id) const {
  return processor_->IsUnknown(id);
}
bool SentencePieceBackend::IsByte(int id) const {
  return processor_->IsByte(id);
}

}  // namespace latentkv::model::internal
