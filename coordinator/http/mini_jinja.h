// A small subset of Jinja2, enough for the chat templates found in Hugging
// Face tokenizer_config.json files (ChatML, Llama 2/3, Mistral, Zephyr,
// Gemma style). Rendered like transformers does: trim_blocks and
// lstrip_blocks on, undefined values print as "".
//
// Supported:
//  - {{ expr }}, {% ... %}, {# comment #}, "-" whitespace control;
//  - if / elif / else / endif; for x in expr (and "for k, v in"), with
//    loop.index, index0, revindex, revindex0, first, last, length, and
//    for/else; set name = expr and set ns.attr = expr (namespace(...));
//  - literals (strings, integers, floats, true/false/none, lists, dicts),
//    names, .attr and [index] (negative indexes, [a:b] slices), calls,
//    and/or/not, == != < > <= >=, in / not in, + - * / // %, ~, a if c
//    else b, "is [not] defined|undefined|none|string|number|integer|
//    mapping|sequence|iterable|boolean|even|odd|true|false";
//  - filters trim, length/count, upper, lower, capitalize, first, last,
//    default(x), string, int, join(sep), tojson, list, items, reverse;
//  - methods strip/lstrip/rstrip/startswith/endswith/upper/lower/split/
//    replace on strings, get/items/keys/values on mappings;
//  - raise_exception(msg): rendering fails with msg.
// Anything else (macros, blocks, includes, call blocks) fails to parse.
// Thread-safety: a parsed template is immutable; Render is thread-safe.
#ifndef LATENTKV_COORDINATOR_HTTP_MINI_JINJA_H_
#define LATENTKV_COORDINATOR_HTTP_MINI_JINJA_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::coordinator::http::jinja {

// What one render may take: statements run plus loop iterations, and bytes
// of output. Real chat templates take a few per message.
inline constexpr int64_t kMaxRenderSteps = 200'000;
inline constexpr size_t kMaxRenderBytes = size_t{16} << 20;

struct Value;
using List = std::vector<Value>;
using Map = std::map<std::string, Value>;

// A template value. Lists and maps are shared on copy (a namespace() is
// assigned through such a shared map).
struct Value {
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kMap
  };
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Map> map;

  static Value None();
  static Value Bool(bool v);
  static Value Int(int64_t v);
  static Value Float(double v);
  static Value Str(std::string v);
  static Value Of(List v);
  static Value Of(Map v);

  bool defined() const { return kind != Kind::kUndefined; }
  bool Truthy() const;
  // As {{ }} prints it (undefined and none: "").
  std::string ToString() const;
};

struct Stmt;

class MiniJinjaTemplate {
 public:
  ~MiniJinjaTemplate();
  // INVALID_ARGUMENT naming the problem for a template outside the subset.
  static absl::StatusOr<std::unique_ptr<MiniJinjaTemplate>> Parse(
      std::string_view source);
  // Renders with the top-level variables `vars`. INVALID_ARGUMENT for
  // raise_exception() and evaluation errors (unknown filter, bad operands).
  // InvalidArgument ("template error") beyond kMaxRenderSteps statements
  // and loop iterations or kMaxRenderBytes of output.
  absl::StatusOr<std::string> Render(const Map& vars) const;

 private:
  MiniJinjaTemplate() = default;
  std::vector<Stmt> body_;
};

}  // namespace latentkv::coordinator::http::jinja

#endif  // LATENTKV_COORDINATOR_HTTP_MINI_JINJA_H_
