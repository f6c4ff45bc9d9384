#include "coordinator/http/structured_output_json.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/http/request_fields.h"

namespace latentkv::coordinator::http {
namespace {

// Key order matters in schemas (see the header).
using json = nlohmann::ordered_json;
namespace pb = ::latentkv::v1;

// A schema given as an object or a boolean, or as its JSON text.
std::optional<ApiError> SchemaText(const json& v, const std::string& param,
                                   std::string* out) {
  if (v.is_object() || v.is_boolean()) {
    *out = v.dump();
    return std::nullopt;
  }
  if (v.is_string()) {
    const json parsed =
        json::parse(v.get<std::string>(), nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !(parsed.is_object() || parsed.is_boolean())) {
      return Bad(param, absl::StrCat("'", param,
                                     "' must be a JSON schema (an object)"));
    }
    *out = v.get<std::string>();
    return std::nullopt;
  }
  return Bad(param,
             absl::StrCat("'", param, "' must be a JSON schema (an object)"));
}

std::optional<ApiError> String(const json& v, const std::string& param,
                               std::string* out) {
  if (!v.is_string() || v.get<std::string>().empty()) {
    return Bad(param, absl::StrCat("'", param, "' must be a non-empty string"));
  }
  *out = v.get<std::string>();
  return std::nullopt;
}

// A regex matching exactly one of `choices` (escaped literally).
std::optional<ApiError> ChoiceRegex(const json& v, const std::string& param,
                                    std::string* out) {
  if (!v.is_array() || v.empty()) {
    return Bad(param, absl::StrCat("'", param,
                                   "' must be a non-empty list of strings"));
  }
  std::string re = "(?:";
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      return Bad(param, absl::StrCat("'", param, "' must hold strings"));
    }
    if (i > 0) re += '|';
    for (char c : v[i].get<std::string>()) {
      if (std::string_view("\\.+*?()|[]{}^$#&-~").find(c) !=
          std::string_view::npos) {
        re += '\\';
      }
      re += c;
    }
  }
  *out = re + ")";
  return std::nullopt;
}

std::optional<ApiError> ResponseFormat(const json& rf, pb::StructuredOutput* so,
                                       bool* set) {
  if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string()) {
    return Bad("response_format",
               "'response_format' must be an object with a string 'type'");
  }
  const std::string type = rf["type"].get<std::string>();
  if (type == "text") return std::nullopt;
  if (type == "json_object") {
    so->set_json_object(true);
    *set = true;
    return std::nullopt;
  }
  if (type == "json_schema") {
    const auto it = rf.find("json_schema");
    if (it == rf.end() || !it->is_object()) {
      return Bad("response_format",
                 "response_format json_schema needs a 'json_schema' object");
    }
    if (it->contains("name") && !(*it)["name"].is_string()) {
      return Bad("response_format", "'json_schema.name' must be a string");
    }
    if (Present(*it, "strict") && !(*it)["strict"].is_boolean()) {
      return Bad("response_format", "'json_schema.strict' must be a boolean");
    }
    if (!Present(*it, "schema")) {
      return Bad("response_format", "'json_schema.schema' is required");
    }
    std::string text;
    if (auto e = SchemaText((*it)["schema"], "response_format", &text)) {
      return e;
    }
    so->set_json_schema(std::move(text));
    *set = true;
    return std::nullopt;
  }
  return Bad("response_format",
             absl::StrCat("response_format type '", type,
                          "' is not supported (text, json_object, "
                          "json_schema)"));
}

}  // namespace

std::optional<ApiError> ParseStructuredOutput(std::string_view text_body,
                                              const nlohmann::json& parsed,
                                              pb::SamplingParams* sp) {
  bool any = false;
  for (const char* k :
       {"response_format", "guided_json", "guided_regex", "guided_choice",
        "guided_grammar", "structured_outputs"}) {
    any = any || parsed.contains(k);
  }
  if (!any) return std::nullopt;
  // The caller bounded the body's nesting and parsed it once already.
  const json body = json::parse(text_body, nullptr, false);
  if (!body.is_object()) return Bad("", "the request body is not valid JSON");
  pb::StructuredOutput so;
  int count = 0;
  std::string text;
  auto one = [&](bool set) { count += set ? 1 : 0; };
  if (Present(body, "response_format")) {
    bool set = false;
    if (auto e = ResponseFormat(body["response_format"], &so, &set)) return e;
    one(set);
  }
  // vLLM's top-level fields and its structured_outputs object share names
  // but for the prefix.
  struct Source {
    const json* obj;
    std::string prefix;
  };
  std::vector<Source> sources = {{&body, "guided_"}};
  if (Present(body, "structured_outputs")) {
    if (!body["structured_outputs"].is_object()) {
      return Bad("structured_outputs",
                 "'structured_outputs' must be an object");
    }
    sources.push_back({&body["structured_outputs"], ""});
    const json& o = body["structured_outputs"];
    if (Present(o, "json_object")) {
      if (!o["json_object"].is_boolean()) {
        return Bad("structured_outputs", "'json_object' must be a boolean");
      }
      if (o["json_object"].get<bool>()) {
        so.set_json_object(true);
        one(true);
      }
    }
    for (const auto& [key, value] : o.items()) {
      if (key != "json" && key != "regex" && key != "choice" &&
          key != "grammar" && key != "json_object") {
        return Bad("structured_outputs",
                   absl::StrCat("structured_outputs '", key,
                                "' is not supported (json, regex, choice, "
                                "grammar, json_object)"));
      }
    }
  }
  // name (after the prefix), how its value is read, where it goes.
  struct Field {
    const char* name;
    std::optional<ApiError> (*read)(const json&, const std::string&,
                                    std::string*);
    void (*set)(pb::StructuredOutput*, std::string);
  };
  static constexpr Field kFields[] = {
      {"json", SchemaText,
       [](pb::StructuredOutput* o, std::string t) {
         o->set_json_schema(std::move(t));
       }},
      {"regex", String,
       [](pb::StructuredOutput* o, std::string t) {
         o->set_regex(std::move(t));
       }},
      {"choice", ChoiceRegex,
       [](pb::StructuredOutput* o, std::string t) {
         o->set_regex(std::move(t));
       }},
      {"grammar", String,
       [](pb::StructuredOutput* o, std::string t) {
         o->set_lark(std::move(t));
       }},
  };
  for (const Source& s : sources) {
    for (const Field& f : kFields) {
      const std::string key = s.prefix + f.name;
      if (!Present(*s.obj, key.c_str())) continue;
      if (auto e = f.read((*s.obj)[key], key, &text)) return e;
      f.set(&so, std::move(text));
      one(true);
    }
  }
  if (count > 1) {
    return Bad("response_format",
               "a request may constrain its output one way only "
               "(response_format, guided_*, structured_outputs)");
  }
  if (count == 1) *sp->mutable_structured_output() = std::move(so);
  return std::nullopt;
}

}  // namespace latentkv::coordinator::http
