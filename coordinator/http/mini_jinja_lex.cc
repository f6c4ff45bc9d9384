// Lexing for mini_jinja.h: template text -> segments (text, {{ }}, {% %})
// with whitespace control, and a tag's contents -> tokens.
#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "coordinator/http/mini_jinja_ast.h"

namespace latentkv::coordinator::http::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void RStrip(std::string& s) {
  while (!s.empty() && IsSpace(s.back())) s.pop_back();
}

}  // namespace

absl::StatusOr<std::vector<Segment>> SplitTemplate(std::string_view src) {
  std::vector<Segment> out;
  size_t pos = 0;
  bool strip_next = false;    // the previous tag ended with "-"
  bool newline_next = false;  // the previous tag was a block (trim_blocks)
  while (pos <= src.size()) {
    size_t p = std::string_view::npos;
    for (const char* open : {"{{", "{%", "{#"}) {
      p = std::min(p, src.find(open, pos));
    }
    std::string text(src.substr(
        pos, p == std::string_view::npos ? std::string_view::npos : p - pos));
    if (strip_next) {
      size_t i = 0;
      while (i < text.size() && IsSpace(text[i])) ++i;
      text.erase(0, i);
    } else if (newline_next) {
      if (text.rfind("\r\n", 0) == 0) {
        text.erase(0, 2);
      } else if (!text.empty() && text[0] == '\n') {
        text.erase(0, 1);
      }
    }
    if (p == std::string_view::npos) {
      if (!text.empty()) out.push_back({Segment::Kind::kText, text});
      break;
    }
    const char kind = src[p + 1];
    const char mod = p + 2 < src.size() ? src[p + 2] : '\0';
    if (mod == '-') {
      RStrip(text);
    } else if (kind != '{' && mod != '+') {
      // lstrip_blocks: spaces/tabs between a line start and a block tag go.
      size_t k = p;
      while (k > pos && (src[k - 1] == ' ' || src[k - 1] == '\t')) --k;
      if (k == 0 || src[k - 1] == '\n') {
        text.erase(text.size() - std::min(text.size(), p - k));
      }
    }
    if (!text.empty()) out.push_back({Segment::Kind::kText, text});
    const char* close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    const size_t end = src.find(close, p + 2);
    if (end == std::string_view::npos) {
      return TemplateError(absl::StrCat("unclosed tag at offset ", p));
    }
    size_t b = p + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
    size_t e = end;
    strip_next = e > b && src[e - 1] == '-';
    if (strip_next) --e;
    newline_next = kind != '{';
    if (kind != '#') {
      out.push_back({kind == '{' ? Segment::Kind::kExpr : Segment::Kind::kStmt,
                     std::string(src.substr(b, e - b))});
    }
    pos = end + 2;
  }
  return out;
}

absl::StatusOr<std::vector<Tok>> Lex(const std::string& s) {
  std::vector<Tok> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsSpace(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() &&
             (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) {
        ++j;
      }
      out.push_back({Tok::K::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool dot = false;
      while (j < s.size() &&
             (std::isdigit(static_cast<unsigned char>(s[j])) ||
              (s[j] == '.' && !dot && j + 1 < s.size() &&
               std::isdigit(static_cast<unsigned char>(s[j + 1]))))) {
        dot |= s[j] == '.';
        ++j;
      }
      Tok t{dot ? Tok::K::kFloat : Tok::K::kInt, s.substr(i, j - i)};
      if (dot) {
        t.f = std::strtod(t.s.c_str(), nullptr);
      } else {
        t.i = std::strtoll(t.s.c_str(), nullptr, 10);
      }
      out.push_back(t);
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char n = s[++j];
          v += n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n;
        } else {
          v += s[j];
        }
      }
      if (j >= s.size()) return TemplateError("unterminated string");
      out.push_back({Tok::K::kStr, v});
      i = j + 1;
    } else {
      static const char* kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
      std::string op(1, c);
      for (const char* t : kTwo) {
        if (s.compare(i, 2, t) == 0) op = t;
      }
      if (std::string("+-*/%~<>()[]{}.,:|=!").find(c) == std::string::npos) {
        return TemplateError(absl::StrCat("unexpected character '", op, "'"));
      }
      out.push_back({Tok::K::kOp, op});
      i += op.size();
    }
  }
  out.push_back({Tok::K::kEnd, ""});
  return out;
}

}  // namespace latentkv::coordinator::http::jinja
