// Structured output inside the engine: a per-sequence constraint that says
// which tokens may come next (a bitmask over the vocabulary) and follows the
// tokens sampled. The engine knows only this interface; worker/grammar
// implements it with llguidance (JSON schema, JSON object, regex, Lark).
//
// Thread-safety: a TokenConstraint belongs to one sequence and is used from
// the engine thread only (after being built on an RPC thread). A
// ConstraintCompiler is called from many RPC threads at once.
#ifndef LATENTKV_WORKER_ENGINE_TOKEN_CONSTRAINT_H_
#define LATENTKV_WORKER_ENGINE_TOKEN_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace latentkv::worker {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Words of the allowed-token bitmask: token t is allowed when bit t % 32
  // of words[t / 32] is set. Sized for the model's vocabulary.
  virtual int32_t mask_words() const = 0;
  // Fills the mask for the next token (end-of-sequence tokens are allowed
  // only where the grammar may end). Internal on a library failure.
  virtual absl::Status FillMask(absl::Span<uint32_t> words) = 0;
  // Whether `token` may come next: an end-of-sequence token where the
  // grammar may end, any other where it continues the grammar. Checks the
  // one token (no walk over the vocabulary), so it is much cheaper than
  // FillMask; false on a library failure.
  virtual bool Allows(int32_t token) = 0;
  // Advances past `token` (not an end-of-sequence token).
  // InvalidArgument when the grammar does not allow it.
  virtual absl::Status Accept(int32_t token) = 0;
  // True when the grammar is complete and allows nothing but its end: the
  // sequence should finish (kStop) without sampling again.
  virtual bool Done() const = 0;
};

// What a request constrains its output to.
enum class ConstraintKind {
  kJsonSchema,  // text: a JSON Schema (draft 2020-12 subset)
  kJsonObject,  // any JSON object; text unused
  kRegex,       // text: a regular expression (Rust regex syntax)
  kLark,        // text: a Lark-style context-free grammar (llguidance)
};

struct ConstraintSpec {
  ConstraintKind kind = ConstraintKind::kJsonObject;
  std::string text;
};

class ConstraintCompiler {
 public:
  virtual ~ConstraintCompiler() = default;
  // A fresh constraint at the start of the output. InvalidArgument for a
  // spec that does not compile (the message says why); ResourceExhausted
  // when it exceeds the compiler's bounds.
  virtual absl::StatusOr<std::unique_ptr<TokenConstraint>> Compile(
      const ConstraintSpec& spec) const = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_TOKEN_CONSTRAINT_H_
