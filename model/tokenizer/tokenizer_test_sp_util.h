// Test helpers that need SentencePiece headers, kept in their own translation
// unit because those headers clash with Abseil's (see sentencepiece_backend.h).
#ifndef LATENTKV_MODEL_TOKENIZER_TOKENIZER_TEST_SP_UTIL_H_
#define LATENTKV_MODEL_TOKENIZER_TOKENIZER_TEST_SP_UTIL_H_

#include <string>

namespace latentkv::model::test_util {

// Runs sentencepiece::SentencePieceTrainer::Train(args). Returns "" on
// success, else the error.
std::string TrainSentencePiece(const std::string& args);

}  // namespace latentkv::model::test_util

#endif  // LATENTKV_MODEL_TOKENIZER_TOKENIZER_TEST_SP_UTIL_H_
