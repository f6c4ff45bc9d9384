// The part of llguidance's C ABI (https://github.com/guidance-ai/llguidance,
// parser/llguidance.h, v1.8.0) that latentkv calls, declared here from the
// documented interface: the library is loaded at run time (dlopen), so only
// the structs' layouts and the functions' types are needed. Layouts must
// match v1.8.0 exactly (the pinned wheel, tools/llguidance-requirements.txt).
#ifndef LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_ABI_H_
#define LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_ABI_H_

#include <cstddef>
#include <cstdint>

namespace latentkv::worker::llg {

struct Tokenizer;  // LlgTokenizer (opaque)
struct Matcher;    // LlgMatcher (opaque)

// LlgParserLimits: zero fields take the library's defaults.
struct ParserLimits {
  size_t max_items_in_row;
  uint64_t initial_lexer_fuel;
  uint64_t step_lexer_fuel;
  size_t step_max_items;
  size_t max_lexer_states;
  size_t max_grammar_size;
  bool precompute_large_lexemes;
  bool verbose_errors;
};

// LlgConstraintInit (zero-initialised, then llg_constraint_init_set_defaults).
struct ConstraintInit {
  const Tokenizer* tokenizer;
  uint32_t log_buffer_level;
  uint32_t log_stderr_level;
  bool ff_tokens_ok;
  bool backtrack_ok;
  ParserLimits limits;
};

// LlgTokenizeFn: tokenizes `bytes` (no BOS), writes at most `out_len` ids,
// returns how many there are. Called from the library's threads.
using TokenizeFn = size_t (*)(const void* user_data, const uint8_t* bytes,
                              size_t bytes_len, uint32_t* out, size_t out_len);

// LlgTokenizerInitV2; struct_size = sizeof(TokenizerInitV2).
struct TokenizerInitV2 {
  size_t struct_size;
  uint32_t vocab_size;
  uint32_t tok_eos;
  const uint32_t* token_lens;
  const uint8_t* token_bytes;
  const char* tokenizer_json;
  bool tokenize_assumes_string;
  TokenizeFn tokenize_fn;
  bool use_approximate_greedy_tokenize_fn;
  const void* tokenize_user_data;
  const char* const* slices;
  const uint32_t* tok_eos_extra;
  uint32_t tok_eos_extra_count;
};

// The functions, by their C names.
struct Api {
  const char* (*get_version)();
  Tokenizer* (*new_tokenizer_v2)(const TokenizerInitV2*, char* error,
                                 size_t error_len);
  void (*free_tokenizer)(Tokenizer*);
  void (*constraint_init_set_defaults)(ConstraintInit*, const Tokenizer*);
  Matcher* (*new_matcher)(const ConstraintInit*, const char* type,
                          const char* data);
  const char* (*matcher_get_error)(Matcher*);
  bool (*matcher_is_error)(const Matcher*);
  int32_t (*matcher_compute_mask_into)(Matcher*, uint32_t* mask,
                                       size_t mask_bytes);
  size_t (*matcher_get_mask_byte_size)(const Matcher*);
  int32_t (*matcher_consume_token)(Matcher*, uint32_t token);
  bool (*matcher_is_accepting)(Matcher*);
  int32_t (*matcher_validate_tokens)(Matcher*, const uint32_t* tokens,
                                     size_t n_tokens);
  bool (*matcher_is_stopped)(const Matcher*);
  void (*free_matcher)(Matcher*);
};

}  // namespace latentkv::worker::llg

#endif  // LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_ABI_H_
