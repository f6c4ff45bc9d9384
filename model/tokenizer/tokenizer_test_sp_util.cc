// Includes sentencepiece_trainer.h: no Abseil header may be included here.
#include "model/tokenizer/tokenizer_test_sp_util.h"

#include <sentencepiece_trainer.h>

#include <string>

namespace latentkv::model::test_util {

std::string TrainSentencePiece(const std::string& args) {
  const sentencepiece::util::Status status =
      sentencepiece::SentencePieceTrainer::Train(args);
  return status.ok() ? "" : status.ToString();
}

}  // namespace latentkv::model::test_util
