#include "coordinator/http/embeddings_api.h"

#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "coordinator/http/request_fields.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

using json = nlohmann::json;

constexpr char kInputShape[] =
    "'input' must be a non-empty string, token ids, or a list of either";

std::optional<ApiError> TokenIds(const json& ids, PromptInput* out) {
  if (ids.empty()) return Bad("input", kInputShape);
  for (const json& t : ids) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Bad("input", kInputShape);
    }
    out->token_ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return std::nullopt;
}

std::optional<ApiError> OneInput(const json& v, PromptInput* out) {
  if (v.is_string()) {
    out->text = v.get<std::string>();
    if (out->text.empty()) return Bad("input", "an 'input' is empty");
    return std::nullopt;
  }
  if (v.is_array()) return TokenIds(v, out);
  return Bad("input", kInputShape);
}

}  // namespace

std::optional<ApiError> ParseEmbeddingsBody(std::string_view body,
                                            EmbeddingsBody* out) {
  if (JsonNestingExceeds(body, kMaxJsonDepth)) {
    return Bad("", "the request body nests too deep");
  }
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Bad("", "the request body must be a JSON object");
  }
  *out = EmbeddingsBody();
  for (const auto& [key, value] : j.items()) {
    if (key != "model" && key != "input" && key != "encoding_format" &&
        key != "dimensions" && key != "user") {
      return Bad(key,
                 absl::StrCat("unrecognized request argument: '", key, "'"));
    }
  }
  if (Present(j, "model")) {
    if (!j["model"].is_string())
      return Bad("model", "'model' must be a string");
    out->model = j["model"].get<std::string>();
  }
  if (!Present(j, "input")) return Bad("input", "'input' is required");
  const json& in = j["input"];
  if (in.is_array() && !in.empty() && (in[0].is_string() || in[0].is_array())) {
    if (in.size() > static_cast<size_t>(kMaxEmbeddingInputs)) {
      return Bad("input", absl::StrCat("at most ", kMaxEmbeddingInputs,
                                       " inputs per request"));
    }
    for (const json& one : in) {
      if (!one.is_string() && !one.is_array()) {
        return Bad("input", kInputShape);
      }
      out->inputs.emplace_back();
      if (auto e = OneInput(one, &out->inputs.back())) return e;
    }
  } else {
    out->inputs.emplace_back();
    if (auto e = OneInput(in, &out->inputs.back())) return e;
  }
  if (Present(j, "encoding_format")) {
    const json& f = j["encoding_format"];
    if (f == "base64") {
      out->base64 = true;
    } else if (f != "float") {
      return Bad("encoding_format",
                 "'encoding_format' must be \"float\" or \"base64\"");
    }
  }
  if (Present(j, "dimensions")) {
    if (!j["dimensions"].is_number_integer()) {
      return Bad("dimensions", "'dimensions' must be an integer");
    }
    out->dimensions = j["dimensions"].get<int64_t>();
  }
  if (Present(j, "user") && !j["user"].is_string()) {
    return Bad("user", "'user' must be a string");
  }
  return std::nullopt;
}

std::string EmbeddingsJson(const std::string& model,
                           const std::vector<std::vector<float>>& vectors,
                           int64_t prompt_tokens, bool base64) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    json e{{"object", "embedding"}, {"index", i}};
    if (base64) {
      // Little-endian float32, as OpenAI's clients decode it (x86-64 and
      // aarch64 Linux are little-endian).
      std::string bytes(vectors[i].size() * sizeof(float), '\0');
      std::memcpy(bytes.data(), vectors[i].data(), bytes.size());
      e["embedding"] = absl::Base64Escape(bytes);
    } else {
      e["embedding"] = vectors[i];
    }
    data.push_back(std::move(e));
  }
  return json{
      {"object", "list"},
      {"data", std::move(data)},
      {"model", model},
      {"usage",
       {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace latentkv::coordinator::http
