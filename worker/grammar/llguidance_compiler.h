// ConstraintCompiler over llguidance: compiles a JSON schema, "any JSON
// object", a regex or a Lark grammar into a matcher over the model's
// vocabulary, and hands it to the engine as a TokenConstraint.
//
// The vocabulary is given to llguidance as each token's bytes
// (Tokenizer::TokenBytes after an ordinary token); tokens with no bytes
// (BOS, EOS, control tokens, ids past the tokenizer's vocabulary) are never
// allowed, except the EOS tokens where the grammar may end. latentkv
// never asks llguidance to tokenize (no fast-forward tokens, no token
// healing), so its approximate greedy tokenizer is used for what it builds
// internally.
//
// Thread-safety: Compile may be called from many threads (llguidance's
// tokenizer is shared read-only); each constraint is single-threaded and
// may outlive the compiler.
#ifndef LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_COMPILER_H_
#define LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_COMPILER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/generation_rules.h"
#include "model/config.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine/token_constraint.h"
#include "worker/grammar/llguidance_library.h"

namespace latentkv::worker {

struct LlguidanceCompilerOptions {
  // Longest spec text accepted, bytes (InvalidArgument beyond). Default
  // 256 KiB.
  size_t max_spec_bytes = kMaxStructuredOutputBytes;
  // Whitespace JSON output may hold at each place JSON allows it (a regex;
  // llguidance's "x-guidance" whitespace_pattern, added to a schema that
  // has no "x-guidance" of its own): at most one line break and 12 blanks,
  // so that a model cannot loop on blanks, with room for pretty-printing
  // three levels deep at 4-space indents. Empty: any amount.
  std::string json_whitespace = "(?:\\r?\\n)?[ \\t]{0,12}";
  // llguidance's bound on lexer work per token mask (its "fuel"); 0 takes
  // the library's default (200,000, ~15 ms). A mask that runs out fails the
  // request.
  uint64_t step_lexer_fuel = 0;
  // Bound on the grammar's size (symbols); 0: the library's default
  // (500,000).
  size_t max_grammar_size = 0;
};

class LlguidanceCompiler final : public ConstraintCompiler {
 public:
  // `vocab_size`: the model's (logit rows; >= the tokenizer's). `eos_ids`:
  // the tokens that end generation, non-empty (the first is llguidance's
  // EOS). InvalidArgument for an empty eos_ids or ids outside the vocabulary;
  // Internal when llguidance refuses the vocabulary.
  static absl::StatusOr<std::unique_ptr<LlguidanceCompiler>> Create(
      std::shared_ptr<const LlguidanceLibrary> library,
      const model::Tokenizer& tokenizer, int32_t vocab_size,
      const std::vector<int32_t>& eos_ids,
      const LlguidanceCompilerOptions& options = {});
  ~LlguidanceCompiler() override;

  // The compiler for a model: its tokenizer (model::LoadTokenizer of
  // `model_path`), logit rows and EOS ids from `config`, and llguidance from
  // `llguidance_dir` (empty: LlguidanceLibrary::LoadDefault()).
  static absl::StatusOr<std::unique_ptr<LlguidanceCompiler>> CreateForModel(
      const std::string& model_path, const model::ModelConfig& config,
      const std::string& llguidance_dir,
      const LlguidanceCompilerOptions& options = {});

  absl::StatusOr<std::unique_ptr<TokenConstraint>> Compile(
      const ConstraintSpec& spec) const override;

 private:
  LlguidanceCompiler() = default;
  std::shared_ptr<const LlguidanceLibrary> lib_;
  LlguidanceCompilerOptions options_;
  llg::Tokenizer* tokenizer_ = nullptr;  // owned
  std::vector<int32_t> eos_ids_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_COMPILER_H_
