// Parsing for mini_jinja.h: tokens of each tag -> statements and expressions
// (mini_jinja_ast.h).
#include <cctype>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "coordinator/http/mini_jinja.h"
#include "coordinator/http/mini_jinja_ast.h"

namespace latentkv::coordinator::http::jinja {
namespace {

#define LK_RETURN_IF_ERROR(expr)   \
  do {                             \
    absl::Status lk_st = (expr);   \
    if (!lk_st.ok()) return lk_st; \
  } while (0)

using ExprP = std::unique_ptr<Expr>;

// Deepest nesting of expressions (brackets, calls, not/-) and of blocks
// (if/for) a template may have: real chat templates nest a few levels; the
// bound keeps the recursive parser and evaluator off the stack's end (800
// nested '[' overflowed it under ASan; found by fuzz_chat_template).
constexpr int kMaxNesting = 64;

absl::Status TooDeep() {
  return TemplateError(
      absl::StrCat("nested more than ", kMaxNesting, " levels deep"));
}

// Recursive descent over one tag's tokens, by Jinja's precedence.
class ExprParser {
 public:
  explicit ExprParser(std::vector<Tok> toks) : t_(std::move(toks)) {}

  bool AtEnd() const { return t_[p_].k == Tok::K::kEnd; }
  bool IsOp(const char* op) const {
    return t_[p_].k == Tok::K::kOp && t_[p_].s == op;
  }
  bool IsName(const char* n) const {
    return t_[p_].k == Tok::K::kName && t_[p_].s == n;
  }
  absl::Status Expect(const char* op) {
    if (!IsOp(op)) return TemplateError(absl::StrCat("expected '", op, "'"));
    ++p_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Name() {
    if (t_[p_].k != Tok::K::kName) return TemplateError("expected a name");
    return t_[p_++].s;
  }

  absl::StatusOr<ExprP> Parse() {  // a if c else b
    const DepthGuard guard(&depth_);
    if (depth_ > kMaxNesting) return TooDeep();
    auto e = Or();
    if (!e.ok() || !IsName("if")) return e;
    ++p_;
    auto cond = Or();
    if (!cond.ok()) return cond.status();
    ExprP alt;
    if (IsName("else")) {
      ++p_;
      auto a = Parse();
      if (!a.ok()) return a.status();
      alt = std::move(*a);
    }
    return Node(Expr::Kind::kCond, "", std::move(*e), std::move(*cond),
                std::move(alt));
  }

 private:
  // Counts one level of recursion while it lives.
  struct DepthGuard {
    explicit DepthGuard(int* d) : d(d) { ++*d; }
    ~DepthGuard() { --*d; }
    int* d;
  };
  int depth_ = 0;

  static ExprP Node(Expr::Kind k, std::string name, ExprP a = nullptr,
                    ExprP b = nullptr, ExprP c = nullptr) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->name = std::move(name);
    for (ExprP* x : {&a, &b, &c}) {
      if (*x || k == Expr::Kind::kSlice || k == Expr::Kind::kCond) {
        e->args.push_back(std::move(*x));
      }
    }
    if (k != Expr::Kind::kSlice && k != Expr::Kind::kCond) {
      while (!e->args.empty() && !e->args.back()) e->args.pop_back();
    }
    return e;
  }

  using Level = absl::StatusOr<ExprP> (ExprParser::*)();
  absl::StatusOr<ExprP> Binary(Level next, std::set<std::string> ops,
                               bool names) {
    auto lhs = (this->*next)();
    if (!lhs.ok()) return lhs;
    while (ops.count(t_[p_].s) &&
           t_[p_].k == (names ? Tok::K::kName : Tok::K::kOp)) {
      const std::string op = t_[p_++].s;
      auto rhs = (this->*next)();
      if (!rhs.ok()) return rhs;
      *lhs = Node(Expr::Kind::kBinary, op, std::move(*lhs), std::move(*rhs));
    }
    return lhs;
  }
  absl::StatusOr<ExprP> Or() { return Binary(&ExprParser::And, {"or"}, true); }
  absl::StatusOr<ExprP> And() {
    return Binary(&ExprParser::Not, {"and"}, true);
  }
  absl::StatusOr<ExprP> Not() {
    if (!IsName("not")) return Compare();
    const DepthGuard guard(&depth_);
    if (depth_ > kMaxNesting) return TooDeep();
    ++p_;
    auto e = Not();
    if (!e.ok()) return e;
    return Node(Expr::Kind::kUnary, "not", std::move(*e));
  }
  absl::StatusOr<ExprP> Compare() {
    auto lhs = Concat();
    if (!lhs.ok()) return lhs;
    while (true) {
      std::string op;
      if (t_[p_].k == Tok::K::kOp &&
          std::set<std::string>{"==", "!=", "<", ">", "<=", ">="}.count(
              t_[p_].s)) {
        op = t_[p_++].s;
      } else if (IsName("in")) {
        ++p_;
        op = "in";
      } else if (IsName("not") && t_[p_ + 1].k == Tok::K::kName &&
                 t_[p_ + 1].s == "in") {
        p_ += 2;
        op = "not in";
      } else if (IsName("is")) {
        ++p_;
        const bool neg = IsName("not");
        if (neg) ++p_;
        auto test = Name();
        if (!test.ok()) return test.status();
        *lhs = Node(Expr::Kind::kTest, *test, std::move(*lhs));
        (*lhs)->negate = neg;
        continue;
      } else {
        return lhs;
      }
      auto rhs = Concat();
      if (!rhs.ok()) return rhs;
      *lhs = Node(Expr::Kind::kBinary, op, std::move(*lhs), std::move(*rhs));
    }
  }
  absl::StatusOr<ExprP> Concat() {
    return Binary(&ExprParser::Add, {"~"}, false);
  }
  absl::StatusOr<ExprP> Add() {
    return Binary(&ExprParser::Mul, {"+", "-"}, false);
  }
  absl::StatusOr<ExprP> Mul() {
    return Binary(&ExprParser::Unary, {"*", "/", "//", "%"}, false);
  }
  absl::StatusOr<ExprP> Unary() {
    if (!IsOp("-")) return Postfix();
    const DepthGuard guard(&depth_);
    if (depth_ > kMaxNesting) return TooDeep();
    ++p_;
    auto e = Unary();
    if (!e.ok()) return e;
    return Node(Expr::Kind::kUnary, "-", std::move(*e));
  }
  // Call arguments after "(": positional and name=value.
  absl::Status Args(Expr* call) {
    while (!IsOp(")")) {
      if (t_[p_].k == Tok::K::kName && t_[p_ + 1].k == Tok::K::kOp &&
          t_[p_ + 1].s == "=") {
        std::string key = t_[p_].s;
        p_ += 2;
        auto v = Parse();
        if (!v.ok()) return v.status();
        call->kwargs.emplace_back(std::move(key), std::move(*v));
      } else {
        auto v = Parse();
        if (!v.ok()) return v.status();
        call->args.push_back(std::move(*v));
      }
      if (!IsOp(",")) break;
      ++p_;
    }
    return Expect(")");
  }
  absl::StatusOr<ExprP> Postfix() {
    auto e = Primary();
    if (!e.ok()) return e;
    while (true) {
      if (IsOp(".")) {
        ++p_;
        auto n = Name();
        if (!n.ok()) return n.status();
        *e = Node(Expr::Kind::kAttr, *n, std::move(*e));
      } else if (IsOp("[")) {
        ++p_;
        ExprP lo, hi;
        if (!IsOp(":")) {
          auto x = Parse();
          if (!x.ok()) return x;
          lo = std::move(*x);
        }
        if (IsOp(":")) {
          ++p_;
          if (!IsOp("]")) {
            auto x = Parse();
            if (!x.ok()) return x;
            hi = std::move(*x);
          }
          *e = Node(Expr::Kind::kSlice, "", std::move(*e), std::move(lo),
                    std::move(hi));
        } else {
          *e = Node(Expr::Kind::kIndex, "", std::move(*e), std::move(lo));
        }
        LK_RETURN_IF_ERROR(Expect("]"));
      } else if (IsOp("(")) {
        ++p_;
        *e = Node(Expr::Kind::kCall, "", std::move(*e));
        LK_RETURN_IF_ERROR(Args(e->get()));
      } else if (IsOp("|")) {
        ++p_;
        auto n = Name();
        if (!n.ok()) return n.status();
        *e = Node(Expr::Kind::kFilter, *n, std::move(*e));
        if (IsOp("(")) {
          ++p_;
          LK_RETURN_IF_ERROR(Args(e->get()));
        }
      } else {
        return e;
      }
    }
  }
  absl::StatusOr<ExprP> Primary() {
    const Tok t = t_[p_];
    auto lit = [&](Value v) {
      ++p_;
      auto e = std::make_unique<Expr>();
      e->value = std::move(v);
      return e;
    };
    switch (t.k) {
      case Tok::K::kInt:
        return lit(Value::Int(t.i));
      case Tok::K::kFloat:
        return lit(Value::Float(t.f));
      case Tok::K::kStr: {
        std::string s = t.s;  // adjacent literals concatenate
        while (t_[++p_].k == Tok::K::kStr) s += t_[p_].s;
        --p_;
        return lit(Value::Str(s));
      }
      case Tok::K::kName:
        if (t.s == "true" || t.s == "True") return lit(Value::Bool(true));
        if (t.s == "false" || t.s == "False") return lit(Value::Bool(false));
        if (t.s == "none" || t.s == "None") return lit(Value::None());
        ++p_;
        return Node(Expr::Kind::kName, t.s);
      case Tok::K::kOp:
        if (t.s == "(") {
          ++p_;
          auto e = Parse();
          if (!e.ok()) return e;
          LK_RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        if (t.s == "[" || t.s == "{") {
          ++p_;
          const bool dict = t.s == "{";
          auto e = Node(dict ? Expr::Kind::kDict : Expr::Kind::kList, "");
          while (!IsOp(dict ? "}" : "]")) {
            auto item = Parse();
            if (!item.ok()) return item;
            if (dict) {
              if ((*item)->kind != Expr::Kind::kLiteral ||
                  (*item)->value.kind != Value::Kind::kString) {
                return TemplateError("dict keys must be string literals");
              }
              LK_RETURN_IF_ERROR(Expect(":"));
              auto v = Parse();
              if (!v.ok()) return v;
              e->kwargs.emplace_back((*item)->value.s, std::move(*v));
            } else {
              e->args.push_back(std::move(*item));
            }
            if (!IsOp(",")) break;
            ++p_;
          }
          LK_RETURN_IF_ERROR(Expect(dict ? "}" : "]"));
          return e;
        }
        break;
      case Tok::K::kEnd:
        return TemplateError("unexpected end of expression");
    }
    return TemplateError(absl::StrCat("unexpected '", t.s, "'"));
  }

  std::vector<Tok> t_;
  size_t p_ = 0;
};

absl::StatusOr<ExprP> ParseExpr(ExprParser& ep) {
  auto e = ep.Parse();
  if (e.ok() && !ep.AtEnd())
    return TemplateError("unexpected tokens after expression");
  return e;
}

// Statements from segments[*i...] until a {% %} whose keyword is in
// `stops` (returned, tokens in *stop_parser) or the end ("").
absl::StatusOr<std::string> ParseBody(const std::vector<Segment>& segs,
                                      size_t* i, std::vector<Stmt>* out,
                                      const std::set<std::string>& stops,
                                      std::unique_ptr<ExprParser>* stop_parser,
                                      int depth = 0) {
  if (depth > kMaxNesting) return TooDeep();
  for (; *i < segs.size(); ++*i) {
    const Segment& seg = segs[*i];
    Stmt st;
    if (seg.kind == Segment::Kind::kText) {
      st.text = seg.body;
      out->push_back(std::move(st));
      continue;
    }
    auto toks = Lex(seg.body);
    if (!toks.ok()) return toks.status();
    auto ep = std::make_unique<ExprParser>(std::move(*toks));
    if (seg.kind == Segment::Kind::kExpr) {
      auto e = ParseExpr(*ep);
      if (!e.ok()) return e.status();
      st.kind = Stmt::Kind::kOutput;
      st.expr = std::move(*e);
      out->push_back(std::move(st));
      continue;
    }
    auto kw = ep->Name();
    if (!kw.ok()) return kw.status();
    if (stops.count(*kw)) {
      *stop_parser = std::move(ep);
      return *kw;
    }
    if (*kw == "if") {
      st.kind = Stmt::Kind::kIf;
      std::string k = "if";
      while (k != "endif") {
        ExprP cond;
        if (k != "else") {
          auto c = ParseExpr(*ep);
          if (!c.ok()) return c.status();
          cond = std::move(*c);
        }
        std::vector<Stmt> body;
        ++*i;
        auto next = ParseBody(segs, i, &body, {"elif", "else", "endif"}, &ep,
                              depth + 1);
        if (!next.ok()) return next.status();
        if (next->empty()) return TemplateError("missing {% endif %}");
        st.branches.emplace_back(std::move(cond), std::move(body));
        k = *next;
      }
    } else if (*kw == "for") {
      st.kind = Stmt::Kind::kFor;
      do {
        auto v = ep->Name();
        if (!v.ok()) return v.status();
        st.vars.push_back(*v);
      } while (ep->IsOp(",") && ep->Expect(",").ok());
      if (!ep->IsName("in")) return TemplateError("expected 'in' in for");
      ep->Name().IgnoreError();
      auto iter = ParseExpr(*ep);
      if (!iter.ok()) return iter.status();
      st.expr = std::move(*iter);
      ++*i;
      auto next =
          ParseBody(segs, i, &st.body, {"else", "endfor"}, &ep, depth + 1);
      if (!next.ok()) return next.status();
      if (*next == "else") {
        ++*i;
        next = ParseBody(segs, i, &st.else_body, {"endfor"}, &ep, depth + 1);
        if (!next.ok()) return next.status();
      }
      if (next->empty()) return TemplateError("missing {% endfor %}");
    } else if (*kw == "set") {
      st.kind = Stmt::Kind::kSet;
      auto name = ep->Name();
      if (!name.ok()) return name.status();
      st.target = *name;
      if (ep->IsOp(".")) {
        LK_RETURN_IF_ERROR(ep->Expect("."));
        auto attr = ep->Name();
        if (!attr.ok()) return attr.status();
        st.target_attr = *attr;
      }
      LK_RETURN_IF_ERROR(ep->Expect("="));
      auto v = ParseExpr(*ep);
      if (!v.ok()) return v.status();
      st.expr = std::move(*v);
    } else {
      return TemplateError(absl::StrCat("unsupported statement '", *kw, "'"));
    }
    out->push_back(std::move(st));
  }
  return std::string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MiniJinjaTemplate>> MiniJinjaTemplate::Parse(
    std::string_view source) {
  auto segs = SplitTemplate(source);
  if (!segs.ok()) return segs.status();
  std::unique_ptr<MiniJinjaTemplate> t(new MiniJinjaTemplate());
  size_t i = 0;
  std::unique_ptr<ExprParser> stop;
  auto end = ParseBody(*segs, &i, &t->body_, {}, &stop);
  if (!end.ok()) return end.status();
  return t;
}

MiniJinjaTemplate::~MiniJinjaTemplate() = default;

}  // namespace latentkv::coordinator::http::jinja
