// Internal to mini_jinja: the parsed form of a template and the pieces the
// lexer, parser, evaluator and built-ins (mini_jinja_*.cc) share.
#ifndef LATENTKV_COORDINATOR_HTTP_MINI_JINJA_AST_H_
#define LATENTKV_COORDINATOR_HTTP_MINI_JINJA_AST_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/http/mini_jinja.h"

namespace latentkv::coordinator::http::jinja {

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // args: items
    kDict,     // kwargs: key -> value
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]] (null bounds: open)
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..])
    kTest,     // args[0] is [not] name
    kUnary,    // name ("not" or "-") args[0]
    kBinary,   // args[0] name args[1]
    kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  Value value;
  std::string name;
  bool negate = false;  // kTest: "is not"
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
};

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet };
  Kind kind = Kind::kText;
  std::string text;            // kText
  std::unique_ptr<Expr> expr;  // kOutput; kFor: the iterable; kSet: value
  // kIf: (condition, body) in order; a null condition is the else branch.
  std::vector<std::pair<std::unique_ptr<Expr>, std::vector<Stmt>>> branches;
  std::vector<std::string> vars;      // kFor: loop variables (1 or 2)
  std::vector<Stmt> body, else_body;  // kFor
  std::string target, target_attr;    // kSet: name or name.attr
};

// mini_jinja_lex.cc: the template cut into text and tags, whitespace control
// applied ("-" markers, trim_blocks, lstrip_blocks; comments dropped).
struct Segment {
  enum class Kind { kText, kExpr, kStmt } kind;
  std::string body;  // text, or a tag's contents without delimiters
};
absl::StatusOr<std::vector<Segment>> SplitTemplate(std::string_view src);

// A tag's contents as tokens, ending with kEnd.
struct Tok {
  enum class K { kName, kInt, kFloat, kStr, kOp, kEnd } k = K::kEnd;
  std::string s;  // name, operator, or a string literal's value
  int64_t i = 0;
  double f = 0;
};
absl::StatusOr<std::vector<Tok>> Lex(const std::string& s);

// mini_jinja_value.cc: built-ins.
absl::Status TemplateError(const std::string& what);
bool Equal(const Value& a, const Value& b);
inline bool IsNumber(const Value& v) {
  return v.kind == Value::Kind::kInt || v.kind == Value::Kind::kFloat;
}
inline double Num(const Value& v) {
  return v.kind == Value::Kind::kInt ? static_cast<double>(v.i) : v.f;
}
// Python-style index into [0, n): negative counts from the end.
inline int64_t Wrap(int64_t i, int64_t n) { return i < 0 ? i + n : i; }
absl::StatusOr<Value> ApplyFilter(const Value& v, const std::string& name,
                                  const std::vector<Value>& args);
absl::StatusOr<bool> ApplyTest(const Value& v, const std::string& name);
absl::StatusOr<Value> CallMethod(const Value& obj, const std::string& name,
                                 const std::vector<Value>& args);

}  // namespace latentkv::coordinator::http::jinja

#endif  // LATENTKV_COORDINATOR_HTTP_MINI_JINJA_AST_H_
