// Pre-tokenizers of byte-level BPE tokenizers (GPT-2 family): they cut text
// into pieces ("pre-tokens") that BPE then merges independently. Each one
// reproduces, over code points and without a regex engine, the split HF
// tokenizers makes (Oniguruma regexes; the Python `regex` module agrees):
//
//   kGpt2    ByteLevel(use_regex): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//            ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kSmollm  Digits(individual_digits): every \p{N} code point alone, then
//            the GPT-2 regex over each remaining piece.
//   kLlama3  Split: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
//            \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2   the same with \p{N} (single digits).
//
// \p{L}, \p{N} and \s (White_Space) come from unicode_tables.h. (?i) folds
// as the regex engines do: ASCII case plus U+017F (long s) for 's. Bytes
// that are not valid UTF-8 count as one code point each, in no class.
//
// Thread-safety: pure functions.
#ifndef LATENTKV_MODEL_TOKENIZER_BPE_PRETOKENIZER_H_
#define LATENTKV_MODEL_TOKENIZER_BPE_PRETOKENIZER_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::model {

enum class PreTokenizerKind { kGpt2, kSmollm, kLlama3, kQwen2 };

// The kind for a llama.cpp `tokenizer.ggml.pre` name: "gpt2", "default" ->
// kGpt2; "smollm", "starcoder", "refact", "command-r", "codeshell",
// "exaone", "minerva" -> kSmollm; "llama-bpe", "llama3" -> kLlama3; "qwen2"
// -> kQwen2. InvalidArgument for any other name.
absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name);

// The canonical name of `kind` ("gpt2", "smollm", "llama3", "qwen2").
std::string_view PreTokenizerName(PreTokenizerKind kind);

// The Split regex (HF syntax) of kLlama3 / kQwen2.
std::string_view PreTokenizerSplitRegex(PreTokenizerKind kind);

// Appends the pre-tokens of `text` to `out`, in order; they are views into
// `text`, non-empty, and concatenate to `text`.
void PreTokenize(PreTokenizerKind kind, std::string_view text,
                 std::vector<std::string_view>* out);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_BPE_PRETOKENIZER_H_
