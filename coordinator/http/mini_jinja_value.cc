// Values and the built-in filters, tests and methods of mini_jinja.h.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

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

Value Value::None() {
  Value v;
  v.kind = K::kNone;
  return v;
}
Value Value::Bool(bool x) {
  Value v;
  v.kind = K::kBool;
  v.b = x;
  return v;
}
Value Value::Int(int64_t x) {
  Value v;
  v.kind = K::kInt;
  v.i = x;
  return v;
}
Value Value::Float(double x) {
  Value v;
  v.kind = K::kFloat;
  v.f = x;
  return v;
}
Value Value::Str(std::string x) {
  Value v;
  v.kind = K::kString;
  v.s = std::move(x);
  return v;
}
Value Value::Of(List x) {
  Value v;
  v.kind = K::kList;
  v.list = std::make_shared<List>(std::move(x));
  return v;
}
Value Value::Of(Map x) {
  Value v;
  v.kind = K::kMap;
  v.map = std::make_shared<Map>(std::move(x));
  return v;
}

bool Value::Truthy() const {
  switch (kind) {
    case K::kUndefined:
    case K::kNone:
      return false;
    case K::kBool:
      return b;
    case K::kInt:
      return i != 0;
    case K::kFloat:
      return f != 0;
    case K::kString:
      return !s.empty();
    case K::kList:
      return !list->empty();
    case K::kMap:
      return !map->empty();
  }
  return false;
}

namespace {

nlohmann::json ToJson(const Value& v) {
  switch (v.kind) {
    case K::kBool:
      return v.b;
    case K::kInt:
      return v.i;
    case K::kFloat:
      return v.f;
    case K::kString:
      return v.s;
    case K::kList: {
      auto a = nlohmann::json::array();
      for (const Value& x : *v.list) a.push_back(ToJson(x));
      return a;
    }
    case K::kMap: {
      auto o = nlohmann::json::object();
      for (const auto& [k, x] : *v.map) o[k] = ToJson(x);
      return o;
    }
    default:
      return nullptr;
  }
}

std::string Repr(const Value& v) {
  if (v.kind == K::kString) return absl::StrCat("'", v.s, "'");
  if (v.kind == K::kNone) return "None";
  return v.ToString();
}

}  // namespace

std::string Value::ToString() const {
  switch (kind) {
    case K::kUndefined:
    case K::kNone:
      return "";
    case K::kBool:
      return b ? "True" : "False";
    case K::kInt:
      return absl::StrCat(i);
    case K::kFloat: {
      if (std::isfinite(f) && f == std::floor(f) && std::fabs(f) < 1e16) {
        return absl::StrCat(static_cast<int64_t>(f), ".0");
      }
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof(buf), f);
      return std::string(buf, r.ptr);
    }
    case K::kString:
      return s;
    case K::kList: {
      std::vector<std::string> parts;
      for (const Value& x : *list) parts.push_back(Repr(x));
      return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
    }
    case K::kMap: {
      std::vector<std::string> parts;
      for (const auto& [k, x] : *map) {
        parts.push_back(absl::StrCat("'", k, "': ", Repr(x)));
      }
      return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
    }
  }
  return "";
}

bool Equal(const Value& a, const Value& b) {
  if (IsNumber(a) && IsNumber(b)) return Num(a) == Num(b);
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::kBool:
      return a.b == b.b;
    case K::kString:
      return a.s == b.s;
    case K::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i) {
        if (!Equal((*a.list)[i], (*b.list)[i])) return false;
      }
      return true;
    case K::kMap:
      return a.map == b.map;
    default:
      return true;  // none == none, undefined == undefined
  }
}

namespace {

std::string Strip(const std::string& s, const std::string& chars, bool left,
                  bool right) {
  size_t b = 0, e = s.size();
  while (left && b < e && chars.find(s[b]) != std::string::npos) ++b;
  while (right && e > b && chars.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}

const char kSpaces[] = " \t\r\n\f\v";

}  // namespace

absl::Status TemplateError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("chat template: ", what));
}

absl::StatusOr<Value> CallMethod(const Value& obj, const std::string& name,
                                 const std::vector<Value>& a) {
  auto str_arg = [&](size_t i, std::string def) {
    return i < a.size() && a[i].kind == K::kString ? a[i].s : def;
  };
  if (obj.kind == K::kString) {
    const std::string& s = obj.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return Value::Str(
          Strip(s, str_arg(0, kSpaces), name != "rstrip", name != "lstrip"));
    }
    if (name == "startswith")
      return Value::Bool(s.rfind(str_arg(0, ""), 0) == 0);
    if (name == "endswith") {
      const std::string x = str_arg(0, "");
      return Value::Bool(s.size() >= x.size() &&
                         s.compare(s.size() - x.size(), x.size(), x) == 0);
    }
    if (name == "upper") return Value::Str(absl::AsciiStrToUpper(s));
    if (name == "lower") return Value::Str(absl::AsciiStrToLower(s));
    if (name == "replace" && a.size() == 2) {
      return Value::Str(
          absl::StrReplaceAll(s, {{str_arg(0, ""), str_arg(1, "")}}));
    }
    if (name == "split") {
      List l;
      if (a.empty()) {
        for (absl::string_view p :
             absl::StrSplit(s, absl::ByAnyChar(kSpaces), absl::SkipEmpty())) {
          l.push_back(Value::Str(std::string(p)));
        }
      } else {
        for (absl::string_view p : absl::StrSplit(s, str_arg(0, " "))) {
          l.push_back(Value::Str(std::string(p)));
        }
      }
      return Value::Of(std::move(l));
    }
  }
  if (obj.kind == K::kMap) {
    if (name == "get" && !a.empty() && a[0].kind == K::kString) {
      auto it = obj.map->find(a[0].s);
      if (it != obj.map->end()) return it->second;
      return a.size() > 1 ? a[1] : Value::None();
    }
    if (name == "items") return ApplyFilter(obj, "items", {});
    if (name == "keys" || name == "values") {
      List l;
      for (const auto& [k, v] : *obj.map) {
        l.push_back(name == "keys" ? Value::Str(k) : v);
      }
      return Value::Of(std::move(l));
    }
  }
  return TemplateError(absl::StrCat("unknown method .", name, "()"));
}

absl::StatusOr<Value> ApplyFilter(const Value& v, const std::string& name,
                                  const std::vector<Value>& a) {
  if (name == "trim")
    return Value::Str(Strip(v.ToString(), kSpaces, true, true));
  if (name == "upper") return Value::Str(absl::AsciiStrToUpper(v.ToString()));
  if (name == "lower") return Value::Str(absl::AsciiStrToLower(v.ToString()));
  if (name == "capitalize") {
    std::string s = absl::AsciiStrToLower(v.ToString());
    if (!s.empty()) s[0] = absl::ascii_toupper(s[0]);
    return Value::Str(s);
  }
  if (name == "string") return Value::Str(v.ToString());
  if (name == "tojson") {
    // Invalid UTF-8 (a template's own bytes) becomes U+FFFD instead of
    // nlohmann's type_error, which nothing caught (found by
    // fuzz_chat_template).
    return Value::Str(ToJson(v).dump(-1, ' ', false,
                                     nlohmann::json::error_handler_t::replace));
  }
  if (name == "default") {
    const bool falsy = a.size() > 1 && a[1].Truthy();
    if (!v.defined() || (falsy && !v.Truthy())) {
      return a.empty() ? Value::Str("") : a[0];
    }
    return v;
  }
  if (name == "int") {
    if (v.kind == K::kInt) return v;
    if (v.kind == K::kFloat) {
      // Out of int64's range (or NaN) the cast is undefined: 0, as for
      // other values that are not numbers.
      const bool fits = v.f > -9.3e18 && v.f < 9.3e18;
      return Value::Int(fits ? static_cast<int64_t>(v.f) : 0);
    }
    if (v.kind == K::kString) {
      return Value::Int(std::strtoll(v.s.c_str(), nullptr, 10));
    }
    return Value::Int(0);
  }
  if (name == "length" || name == "count") {
    if (v.kind == K::kString) return Value::Int(v.s.size());
    if (v.kind == K::kList) return Value::Int(v.list->size());
    if (v.kind == K::kMap) return Value::Int(v.map->size());
    return Value::Int(0);
  }
  if (name == "items" && v.kind == K::kMap) {
    List l;
    for (const auto& [k, x] : *v.map)
      l.push_back(Value::Of(List{Value::Str(k), x}));
    return Value::Of(std::move(l));
  }
  if (v.kind == K::kList) {
    const List& l = *v.list;
    if (name == "first") return l.empty() ? Value() : l.front();
    if (name == "last") return l.empty() ? Value() : l.back();
    if (name == "list") return v;
    if (name == "reverse") return Value::Of(List(l.rbegin(), l.rend()));
    if (name == "join") {
      std::string out;
      for (size_t i = 0; i < l.size(); ++i) {
        if (i > 0 && !a.empty()) out += a[0].ToString();
        out += l[i].ToString();
        if (out.size() > kMaxRenderBytes) {
          return TemplateError("join makes a string over the render limit");
        }
      }
      return Value::Str(out);
    }
  }
  if (v.kind == K::kString && (name == "first" || name == "last")) {
    if (v.s.empty()) return Value();
    return Value::Str(name == "first" ? v.s.substr(0, 1)
                                      : v.s.substr(v.s.size() - 1));
  }
  return TemplateError(absl::StrCat("unsupported filter '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(const Value& v, const std::string& name) {
  if (name == "defined") return v.defined();
  if (name == "undefined") return !v.defined();
  if (name == "none") return v.kind == K::kNone;
  if (name == "string") return v.kind == K::kString;
  if (name == "number") return IsNumber(v);
  if (name == "integer") return v.kind == K::kInt;
  if (name == "boolean") return v.kind == K::kBool;
  if (name == "true") return v.kind == K::kBool && v.b;
  if (name == "false") return v.kind == K::kBool && !v.b;
  if (name == "mapping") return v.kind == K::kMap;
  if (name == "sequence" || name == "iterable") {
    return v.kind == K::kList || v.kind == K::kString ||
           (name == "iterable" && v.kind == K::kMap);
  }
  if (name == "even" || name == "odd") {
    if (v.kind != K::kInt) return TemplateError("even/odd need an integer");
    return (v.i % 2 == 0) == (name == "even");
  }
  return TemplateError(absl::StrCat("unsupported test '", name, "'"));
}

}  // namespace latentkv::coordinator::http::jinja
