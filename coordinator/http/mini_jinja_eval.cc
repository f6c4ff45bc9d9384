// Evaluation for mini_jinja.h: expressions and statements (built-ins in
// mini_jinja_value.cc).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "coordinator/http/mini_jinja.h"
#include "coordinator/http/mini_jinja_ast.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http::jinja {

using K = Value::Kind;

namespace {

// Whether `v` holds the map `m`: is it, or has it inside its lists and maps.
// Values are acyclic (a namespace is never set to hold itself), so the walk
// ends.
bool Holds(const Value& v, const Map* m) {
  if (v.kind == K::kMap && v.map != nullptr) {
    if (v.map.get() == m) return true;
    for (const auto& [k, x] : *v.map) {
      if (Holds(x, m)) return true;
    }
  } else if (v.kind == K::kList && v.list != nullptr) {
    for (const Value& x : *v.list) {
      if (Holds(x, m)) return true;
    }
  }
  return false;
}

class Renderer {
 public:
  explicit Renderer(const Map& vars) { scopes_.push_back(vars); }

  absl::Status Exec(const std::vector<Stmt>& body, std::string* out);
  absl::StatusOr<Value> Eval(const Expr& e);

 private:
  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }
  absl::StatusOr<std::vector<Value>> EvalArgs(const Expr& e, size_t from) {
    std::vector<Value> out;
    for (size_t i = from; i < e.args.size(); ++i) {
      auto v = Eval(*e.args[i]);
      if (!v.ok()) return v.status();
      out.push_back(std::move(*v));
    }
    return out;
  }
  absl::StatusOr<Value> Call(const Expr& e);
  absl::StatusOr<Value> Binary(const Expr& e);

  std::vector<Map> scopes_;
  // Counts one statement, loop iteration or operator against
  // kMaxRenderSteps: nested loops multiply (a loop over the messages inside
  // another is messages^2), and the budget keeps a hostile template from
  // holding the coordinator's thread (found by fuzz_chat_template).
  absl::Status Step() {
    if (++steps_ <= kMaxRenderSteps) return absl::OkStatus();
    return TemplateError(absl::StrCat("the template needs more than ",
                                      kMaxRenderSteps, " steps"));
  }
  int64_t steps_ = 0;
};

#define LK_ASSIGN_OR_RETURN(lhs, expr)          \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto& lhs = *lhs##_or

absl::StatusOr<Value> Renderer::Eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList: {
      LK_ASSIGN_OR_RETURN(items, EvalArgs(e, 0));
      return Value::Of(List(items));
    }
    case Expr::Kind::kDict: {
      Map m;
      for (const auto& [k, x] : e.kwargs) {
        LK_ASSIGN_OR_RETURN(v, Eval(*x));
        m[k] = v;
      }
      return Value::Of(std::move(m));
    }
    case Expr::Kind::kAttr: {
      LK_ASSIGN_OR_RETURN(obj, Eval(*e.args[0]));
      if (obj.kind != K::kMap) return Value();
      auto it = obj.map->find(e.name);
      return it == obj.map->end() ? Value() : it->second;
    }
    case Expr::Kind::kIndex: {
      LK_ASSIGN_OR_RETURN(obj, Eval(*e.args[0]));
      LK_ASSIGN_OR_RETURN(idx, Eval(*e.args[1]));
      if (obj.kind == K::kMap && idx.kind == K::kString) {
        auto it = obj.map->find(idx.s);
        return it == obj.map->end() ? Value() : it->second;
      }
      if ((obj.kind == K::kList || obj.kind == K::kString) &&
          idx.kind == K::kInt) {
        const int64_t n = obj.kind == K::kList
                              ? static_cast<int64_t>(obj.list->size())
                              : static_cast<int64_t>(obj.s.size());
        const int64_t i = Wrap(idx.i, n);
        if (i < 0 || i >= n) return Value();
        return obj.kind == K::kList ? (*obj.list)[i]
                                    : Value::Str(obj.s.substr(i, 1));
      }
      return Value();
    }
    case Expr::Kind::kSlice: {
      LK_ASSIGN_OR_RETURN(obj, Eval(*e.args[0]));
      if (obj.kind != K::kList && obj.kind != K::kString) {
        return TemplateError("only lists and strings can be sliced");
      }
      const int64_t n = obj.kind == K::kList
                            ? static_cast<int64_t>(obj.list->size())
                            : static_cast<int64_t>(obj.s.size());
      int64_t lo = 0, hi = n;
      for (int k = 1; k <= 2; ++k) {
        if (!e.args[k]) continue;
        LK_ASSIGN_OR_RETURN(b, Eval(*e.args[k]));
        if (b.kind != K::kInt)
          return TemplateError("slice bounds must be integers");
        (k == 1 ? lo : hi) = std::clamp<int64_t>(Wrap(b.i, n), 0, n);
      }
      hi = std::max(lo, hi);
      if (obj.kind == K::kString) return Value::Str(obj.s.substr(lo, hi - lo));
      return Value::Of(List(obj.list->begin() + lo, obj.list->begin() + hi));
    }
    case Expr::Kind::kCall:
      return Call(e);
    case Expr::Kind::kFilter: {
      LK_ASSIGN_OR_RETURN(v, Eval(*e.args[0]));
      LK_ASSIGN_OR_RETURN(a, EvalArgs(e, 1));
      return ApplyFilter(v, e.name, a);
    }
    case Expr::Kind::kTest: {
      LK_ASSIGN_OR_RETURN(v, Eval(*e.args[0]));
      LK_ASSIGN_OR_RETURN(t, ApplyTest(v, e.name));
      return Value::Bool(t != e.negate);
    }
    case Expr::Kind::kUnary: {
      LK_ASSIGN_OR_RETURN(v, Eval(*e.args[0]));
      if (e.name == "not") return Value::Bool(!v.Truthy());
      if (v.kind == K::kInt) {
        if (v.i == std::numeric_limits<int64_t>::min()) {
          return TemplateError("integer overflow");
        }
        return Value::Int(-v.i);
      }
      if (v.kind == K::kFloat) return Value::Float(-v.f);
      return TemplateError("unary - needs a number");
    }
    case Expr::Kind::kBinary:
      return Binary(e);
    case Expr::Kind::kCond: {
      LK_ASSIGN_OR_RETURN(c, Eval(*e.args[1]));
      if (c.Truthy()) return Eval(*e.args[0]);
      return e.args[2] ? Eval(*e.args[2]) : Value();
    }
  }
  return Value();
}

// Strings and lists a template builds stay within what a render may output
// (doubling a string in a loop otherwise reaches terabytes).
absl::Status CheckSize(size_t n) {
  if (n <= kMaxRenderBytes) return absl::OkStatus();
  return TemplateError(absl::StrCat(
      "a value of ", n, " bytes or items (at most ", kMaxRenderBytes, ")"));
}

absl::StatusOr<Value> Renderer::Binary(const Expr& e) {
  const std::string& op = e.name;
  if (absl::Status s = Step(); !s.ok()) return s;
  LK_ASSIGN_OR_RETURN(a, Eval(*e.args[0]));
  if (op == "and") return a.Truthy() ? Eval(*e.args[1]) : a;
  if (op == "or") return a.Truthy() ? a : Eval(*e.args[1]);
  LK_ASSIGN_OR_RETURN(b, Eval(*e.args[1]));
  if (op == "==") return Value::Bool(Equal(a, b));
  if (op == "!=") return Value::Bool(!Equal(a, b));
  if (op == "~") {
    std::string as = a.ToString(), bs = b.ToString();
    if (absl::Status s = CheckSize(as.size() + bs.size()); !s.ok()) return s;
    return Value::Str(as + bs);
  }
  if (op == "in" || op == "not in") {
    bool in = false;
    if (b.kind == K::kString && a.kind == K::kString) {
      in = b.s.find(a.s) != std::string::npos;
    } else if (b.kind == K::kList) {
      in = std::any_of(b.list->begin(), b.list->end(),
                       [&](const Value& x) { return Equal(a, x); });
    } else if (b.kind == K::kMap && a.kind == K::kString) {
      in = b.map->count(a.s) > 0;
    } else if (b.defined()) {
      return TemplateError("'in' needs a string, list or mapping");
    }
    return Value::Bool(in == (op == "in"));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int c;
    if (IsNumber(a) && IsNumber(b)) {
      c = Num(a) < Num(b) ? -1 : Num(a) > Num(b) ? 1 : 0;
    } else if (a.kind == K::kString && b.kind == K::kString) {
      c = a.s.compare(b.s);
    } else {
      return TemplateError(absl::StrCat("cannot compare with ", op));
    }
    return Value::Bool(op == "<"    ? c < 0
                       : op == ">"  ? c > 0
                       : op == "<=" ? c <= 0
                                    : c >= 0);
  }
  if (op == "+" && a.kind == K::kString && b.kind == K::kString) {
    if (absl::Status s = CheckSize(a.s.size() + b.s.size()); !s.ok()) return s;
    return Value::Str(a.s + b.s);
  }
  if (op == "+" && a.kind == K::kList && b.kind == K::kList) {
    if (absl::Status s = CheckSize(a.list->size() + b.list->size()); !s.ok()) {
      return s;
    }
    List l = *a.list;
    l.insert(l.end(), b.list->begin(), b.list->end());
    return Value::Of(std::move(l));
  }
  if (!IsNumber(a) || !IsNumber(b)) {
    return TemplateError(absl::StrCat("operator ", op,
                                      " needs numbers (or + on ",
                                      "two strings or two lists)"));
  }
  const bool ints = a.kind == K::kInt && b.kind == K::kInt;
  if ((op == "/" || op == "//" || op == "%") && Num(b) == 0) {
    return TemplateError("division by zero");
  }
  if (op == "/") return Value::Float(Num(a) / Num(b));
  if (ints) {
    // Overflow is an error, not undefined behaviour (found by
    // fuzz_chat_template).
    int64_t r = 0;
    bool overflow = false;
    if (op == "+") overflow = __builtin_add_overflow(a.i, b.i, &r);
    if (op == "-") overflow = __builtin_sub_overflow(a.i, b.i, &r);
    if (op == "*") overflow = __builtin_mul_overflow(a.i, b.i, &r);
    if (op == "//" || op == "%") {
      overflow = a.i == std::numeric_limits<int64_t>::min() && b.i == -1;
    }
    if (overflow) return TemplateError("integer overflow");
    if (op == "+" || op == "-" || op == "*") return Value::Int(r);
    const int64_t q =
        a.i / b.i - ((a.i % b.i != 0) && ((a.i < 0) != (b.i < 0)));
    if (op == "//") return Value::Int(q);
    if (op == "%") return Value::Int(a.i - q * b.i);
  } else {
    if (op == "+") return Value::Float(Num(a) + Num(b));
    if (op == "-") return Value::Float(Num(a) - Num(b));
    if (op == "*") return Value::Float(Num(a) * Num(b));
    if (op == "//") return Value::Float(std::floor(Num(a) / Num(b)));
    if (op == "%") {
      return Value::Float(Num(a) - std::floor(Num(a) / Num(b)) * Num(b));
    }
  }
  return TemplateError(absl::StrCat("unsupported operator ", op));
}

absl::StatusOr<Value> Renderer::Call(const Expr& e) {
  const Expr& callee = *e.args[0];
  LK_ASSIGN_OR_RETURN(a, EvalArgs(e, 1));
  if (callee.kind == Expr::Kind::kAttr) {
    LK_ASSIGN_OR_RETURN(obj, Eval(*callee.args[0]));
    return CallMethod(obj, callee.name, a);
  }
  if (callee.kind != Expr::Kind::kName)
    return TemplateError("only named calls");
  if (callee.name == "raise_exception") {
    return absl::InvalidArgumentError(a.empty() ? "raise_exception()"
                                                : a[0].ToString());
  }
  if (callee.name == "namespace") {
    Map m;
    for (const auto& [k, x] : e.kwargs) {
      LK_ASSIGN_OR_RETURN(v, Eval(*x));
      m[k] = v;
    }
    return Value::Of(std::move(m));
  }
  if (callee.name == "range" && !a.empty() && a.size() <= 2 &&
      std::all_of(a.begin(), a.end(),
                  [](const Value& v) { return v.kind == K::kInt; })) {
    const int64_t lo = a.size() == 2 ? a[0].i : 0, hi = a.back().i;
    List l;
    for (int64_t i = lo; i < hi && l.size() < 100000; ++i) {
      l.push_back(Value::Int(i));
    }
    return Value::Of(std::move(l));
  }
  return TemplateError(absl::StrCat("unknown function ", callee.name, "()"));
}

absl::Status Renderer::Exec(const std::vector<Stmt>& body, std::string* out) {
  for (const Stmt& st : body) {
    if (absl::Status s = Step(); !s.ok()) return s;
    if (absl::Status s = CheckSize(out->size()); !s.ok()) return s;
    switch (st.kind) {
      case Stmt::Kind::kText:
        *out += st.text;
        break;
      case Stmt::Kind::kOutput: {
        LK_ASSIGN_OR_RETURN(v, Eval(*st.expr));
        *out += v.ToString();
        break;
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, branch] : st.branches) {
          bool take = true;
          if (cond) {
            LK_ASSIGN_OR_RETURN(c, Eval(*cond));
            take = c.Truthy();
          }
          if (take) {
            if (auto s = Exec(branch, out); !s.ok()) return s;
            break;
          }
        }
        break;
      case Stmt::Kind::kFor: {
        LK_ASSIGN_OR_RETURN(it, Eval(*st.expr));
        List items;
        if (it.kind == K::kList) {
          items = *it.list;
        } else if (it.kind == K::kMap) {
          for (const auto& [k, x] : *it.map) items.push_back(Value::Str(k));
        } else if (it.defined() && it.kind != K::kNone) {
          return TemplateError("for needs a list or mapping");
        }
        if (items.empty()) {
          if (auto s = Exec(st.else_body, out); !s.ok()) return s;
          break;
        }
        const int64_t n = items.size();
        for (int64_t i = 0; i < n; ++i) {
          if (absl::Status s = Step(); !s.ok()) return s;
          Map scope;
          if (st.vars.size() == 1) {
            scope[st.vars[0]] = items[i];
          } else if (items[i].kind == K::kList &&
                     items[i].list->size() == st.vars.size()) {
            for (size_t k = 0; k < st.vars.size(); ++k) {
              scope[st.vars[k]] = (*items[i].list)[k];
            }
          } else {
            return TemplateError("cannot unpack a loop item");
          }
          scope["loop"] = Value::Of(Map{{"index", Value::Int(i + 1)},
                                        {"index0", Value::Int(i)},
                                        {"revindex", Value::Int(n - i)},
                                        {"revindex0", Value::Int(n - i - 1)},
                                        {"first", Value::Bool(i == 0)},
                                        {"last", Value::Bool(i == n - 1)},
                                        {"length", Value::Int(n)}});
          scopes_.push_back(std::move(scope));
          absl::Status s = Exec(st.body, out);
          scopes_.pop_back();
          if (!s.ok()) return s;
        }
        break;
      }
      case Stmt::Kind::kSet: {
        LK_ASSIGN_OR_RETURN(v, Eval(*st.expr));
        if (st.target_attr.empty()) {
          scopes_.back()[st.target] = v;
        } else {
          Value ns = Lookup(st.target);
          if (ns.kind != K::kMap) {
            return TemplateError(
                absl::StrCat(st.target, " is not a namespace"));
          }
          // Maps are shared: a namespace holding itself would be a cycle
          // of shared_ptrs, leaked by every render (found by
          // fuzz_chat_template).
          if (Holds(v, ns.map.get())) {
            return TemplateError(
                absl::StrCat(st.target, ".", st.target_attr,
                             " cannot hold the namespace itself"));
          }
          (*ns.map)[st.target_attr] = v;
        }
        break;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> MiniJinjaTemplate::Render(const Map& vars) const {
  Renderer r(vars);
  std::string out;
  if (absl::Status s = r.Exec(body_, &out); !s.ok()) return s;
  return out;
}

}  // namespace latentkv::coordinator::http::jinja
