#include "worker/grammar/llguidance_compiler.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {
namespace {

class LlguidanceConstraint final : public TokenConstraint {
 public:
  LlguidanceConstraint(std::shared_ptr<const LlguidanceLibrary> lib,
                       llg::Matcher* m, std::vector<int32_t> eos_ids)
      : lib_(std::move(lib)), m_(m), eos_ids_(std::move(eos_ids)) {}
  ~LlguidanceConstraint() override { lib_->api().free_matcher(m_); }

  int32_t mask_words() const override {
    return static_cast<int32_t>(lib_->api().matcher_get_mask_byte_size(m_) /
                                sizeof(uint32_t));
  }
  absl::Status FillMask(absl::Span<uint32_t> words) override {
    if (lib_->api().matcher_compute_mask_into(
            m_, words.data(), words.size() * sizeof(uint32_t)) != 0) {
      return Error("computing the allowed tokens");
    }
    return absl::OkStatus();
  }
  bool Allows(int32_t token) override {
    if (token < 0) return false;
    if (std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) {
      return lib_->api().matcher_is_accepting(m_);
    }
    const uint32_t t = static_cast<uint32_t>(token);
    return lib_->api().matcher_validate_tokens(m_, &t, 1) == 1;
  }
  absl::Status Accept(int32_t token) override {
    if (token < 0 || lib_->api().matcher_consume_token(
                         m_, static_cast<uint32_t>(token)) != 0) {
      return Error(absl::StrCat("token ", token));
    }
    return absl::OkStatus();
  }
  bool Done() const override { return lib_->api().matcher_is_stopped(m_); }

 private:
  absl::Status Error(const std::string& what) {
    const char* e = lib_->api().matcher_get_error(m_);
    return absl::InvalidArgumentError(
        absl::StrCat("structured output: ", what, ": ",
                     e != nullptr ? e : "the grammar does not allow it"));
  }

  std::shared_ptr<const LlguidanceLibrary> lib_;
  llg::Matcher* m_;
  std::vector<int32_t> eos_ids_;
};

// A JSON schema with llguidance's "x-guidance" whitespace setting added at
// its top level, unless it has one (or is not an object, e.g. `true`).
std::string WithWhitespace(const std::string& schema,
                           const std::string& pattern) {
  const size_t open = schema.find_first_not_of(" \t\r\n");
  if (pattern.empty() || open == std::string::npos || schema[open] != '{' ||
      schema.find("\"x-guidance\"") != std::string::npos) {
    return schema;
  }
  const size_t next = schema.find_first_not_of(" \t\r\n", open + 1);
  const bool empty = next != std::string::npos && schema[next] == '}';
  std::string quoted;
  for (char ch : pattern) {
    if (ch == '\\' || ch == '"') quoted += '\\';
    quoted += ch;
  }
  return absl::StrCat(schema.substr(0, open + 1),
                      "\"x-guidance\":{\"whitespace_pattern\":\"", quoted,
                      "\"}", empty ? "" : ",", schema.substr(open + 1));
}

const char* TypeName(ConstraintKind k) {
  switch (k) {
    case ConstraintKind::kJsonSchema:
      return "json_schema";
    case ConstraintKind::kJsonObject:
      return "json_object";
    case ConstraintKind::kRegex:
      return "regex";
    case ConstraintKind::kLark:
      return "lark";
  }
  return "json_object";
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlguidanceCompiler>> LlguidanceCompiler::Create(
    std::shared_ptr<const LlguidanceLibrary> library,
    const model::Tokenizer& tokenizer, int32_t vocab_size,
    const std::vector<int32_t>& eos_ids,
    const LlguidanceCompilerOptions& options) {
  if (library == nullptr) {
    return absl::InvalidArgumentError("no llguidance library");
  }
  if (eos_ids.empty() || vocab_size < tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(
        "structured output needs an EOS token and a vocabulary at least the "
        "tokenizer's");
  }
  for (int32_t e : eos_ids) {
    if (e < 0 || e >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("EOS id ", e, " is outside the vocabulary"));
    }
  }
  // Each token's bytes after an ordinary token (not BOS, which some
  // tokenizers strip a leading space after).
  const int32_t prev = tokenizer.bos_id() == 0 ? 1 : 0;
  std::vector<uint32_t> lens(vocab_size);
  std::string bytes;
  for (int32_t t = 0; t < vocab_size; ++t) {
    // Tokens with no bytes (BOS, EOS, control tokens, padding rows) stay
    // empty: llguidance never allows them, EOS aside (tok_eos, where the
    // grammar may end). Named as special tokens (0xFF + name) instead, they
    // entered the masks of some grammars while the parser refused them
    // (AllowsAgreesWithTheMask).
    const std::string b =
        t < tokenizer.vocab_size() ? tokenizer.TokenBytes(prev, t) : "";
    lens[t] = static_cast<uint32_t>(b.size());
    bytes += b;
  }
  std::vector<uint32_t> extra(eos_ids.begin() + 1, eos_ids.end());
  llg::TokenizerInitV2 init{};
  init.struct_size = sizeof(init);
  init.vocab_size = static_cast<uint32_t>(vocab_size);
  init.tok_eos = static_cast<uint32_t>(eos_ids[0]);
  init.token_lens = lens.data();
  init.token_bytes = reinterpret_cast<const uint8_t*>(bytes.data());
  init.use_approximate_greedy_tokenize_fn = true;
  init.tok_eos_extra = extra.empty() ? nullptr : extra.data();
  init.tok_eos_extra_count = static_cast<uint32_t>(extra.size());
  char error[1024] = {0};
  llg::Tokenizer* tok =
      library->api().new_tokenizer_v2(&init, error, sizeof(error));
  if (tok == nullptr) {
    return absl::InternalError(
        absl::StrCat("llguidance refused the vocabulary: ", error));
  }
  std::unique_ptr<LlguidanceCompiler> c(new LlguidanceCompiler());
  c->lib_ = std::move(library);
  c->options_ = options;
  c->tokenizer_ = tok;
  c->eos_ids_ = eos_ids;
  return c;
}

absl::StatusOr<std::unique_ptr<LlguidanceCompiler>>
LlguidanceCompiler::CreateForModel(const std::string& model_path,
                                   const model::ModelConfig& config,
                                   const std::string& llguidance_dir,
                                   const LlguidanceCompilerOptions& options) {
  auto lib = llguidance_dir.empty() ? LlguidanceLibrary::LoadDefault()
                                    : LlguidanceLibrary::Load(llguidance_dir);
  if (!lib.ok()) return lib.status();
  auto tok = model::LoadTokenizer(model_path, config.vocab_size);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(),
                        absl::StrCat("structured output needs the model's "
                                     "tokenizer: ",
                                     tok.status().message()));
  }
  std::vector<int32_t> eos = {config.eos_token_id};
  eos.insert(eos.end(), config.extra_eos_token_ids.begin(),
             config.extra_eos_token_ids.end());
  return Create(*lib, **tok, config.vocab_size, eos, options);
}

LlguidanceCompiler::~LlguidanceCompiler() {
  if (tokenizer_ != nullptr) lib_->api().free_tokenizer(tokenizer_);
}

absl::StatusOr<std::unique_ptr<TokenConstraint>> LlguidanceCompiler::Compile(
    const ConstraintSpec& spec) const {
  if (spec.text.size() > options_.max_spec_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("structured output spec of ", spec.text.size(),
                     " bytes; at most ", options_.max_spec_bytes));
  }
  if (spec.text.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "structured output spec holds a NUL byte");
  }
  const llg::Api& api = lib_->api();
  llg::ConstraintInit init{};
  api.constraint_init_set_defaults(&init, tokenizer_);
  init.log_buffer_level = 0;
  init.log_stderr_level = 0;  // errors come back through get_error
  // Zero options keep the defaults llg_constraint_init_set_defaults set.
  if (options_.step_lexer_fuel > 0) {
    init.limits.step_lexer_fuel = options_.step_lexer_fuel;
  }
  if (options_.max_grammar_size > 0) {
    init.limits.max_grammar_size = options_.max_grammar_size;
  }
  init.limits.verbose_errors = false;  // no grammar echoed into errors
  // JSON gets the bounded whitespace; "any object" is the schema saying so.
  ConstraintKind kind = spec.kind;
  std::string data = spec.text;
  if (kind == ConstraintKind::kJsonObject) {
    kind = ConstraintKind::kJsonSchema;
    data = R"({"type":"object"})";
  }
  if (kind == ConstraintKind::kJsonSchema) {
    data = WithWhitespace(data, options_.json_whitespace);
  }
  llg::Matcher* m = api.new_matcher(&init, TypeName(kind), data.c_str());
  auto constraint = std::make_unique<LlguidanceConstraint>(lib_, m, eos_ids_);
  if (api.matcher_is_error(m)) {
    const char* e = api.matcher_get_error(m);
    return absl::InvalidArgumentError(
        absl::StrCat("structured output (", TypeName(spec.kind),
                     ") does not compile: ", e != nullptr ? e : "unknown"));
  }
  return constraint;
}

}  // namespace latentkv::worker
