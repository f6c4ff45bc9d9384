// An HTTP request as the OpenAI server's own code consumes it (cpp-httplib
// parses the wire format; its parser is not ours). The input is
//   METHOD SP PATH LF, then header lines "Name: value" LF, an empty line,
//   then the body,
// split here simply; what it feeds is the server's code: the Origin check
// (OriginAllowed), the API key check (ApiKeySet::CheckBearer on
// Authorization), the routes' body parsing (ParseRequest; /tokenize and
// /detokenize: utility_api.h), the ChatML rendering of chat messages and the
// JSON bodies that quote the request.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/auth/api_keys.h"
#include "coordinator/http/chat_template.h"
#include "coordinator/http/http_support.h"
#include "coordinator/http/openai_api.h"
#include "coordinator/http/utility_api.h"
#include "tests/fuzz/chatml.h"

namespace http = latentkv::coordinator::http;

namespace {

struct Request {
  std::string method, path, origin, authorization;
  std::string_view body;
};

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::string_view NextLine(std::string_view* in) {
  const size_t nl = in->find('\n');
  std::string_view line = in->substr(0, nl);
  in->remove_prefix(nl == std::string_view::npos ? in->size() : nl + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

Request Split(std::string_view in) {
  Request r;
  std::string_view line = NextLine(&in);
  const size_t sp = line.find(' ');
  r.method = std::string(line.substr(0, sp));
  if (sp != std::string_view::npos) r.path = std::string(line.substr(sp + 1));
  while (!in.empty()) {
    line = NextLine(&in);
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(Trim(line.substr(0, colon)));
    absl::AsciiStrToLower(&name);
    const std::string value(Trim(line.substr(colon + 1)));
    if (name == "origin") r.origin = value;
    if (name == "authorization") r.authorization = value;
  }
  r.body = in;
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::string> origins = {"https://app.example.com",
                                                   "http://localhost:3000"};
  static const latentkv::auth::ApiKeySet keys =
      *latentkv::auth::ApiKeySet::Load(
          "sk-fuzz-0123456789abcdef,sk-second-key-abcdefghij", "");
  static const http::ChatTemplate chatml = *http::ChatTemplate::FromJinja(
      latentkv::fuzz::kChatMlTemplate, "<|im_start|>", "<|im_end|>", false);
  const Request r =
      Split(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!r.origin.empty()) {
    (void)http::OriginAllowed(r.origin, origins);
    (void)http::OriginAllowed(r.origin, {"*"});
  }
  if (!keys.CheckBearer(r.authorization).ok()) {
    // The 401 answer quotes nothing from the request; go on regardless.
  }
  if (r.method == "POST" && r.path == "/tokenize") {
    http::TokenizeBody t;
    if (auto e = http::ParseTokenizeBody(r.body, &t)) {
      (void)http::ErrorJson(*e);
    } else if (!t.prompt.has_value()) {
      auto prompt = chatml.Render(t.messages);
      (void)http::TokenizeJson({1, 2, 3}, prompt.ok() ? prompt->size() : 0);
    }
    return 0;
  }
  if (r.method == "POST" && r.path == "/detokenize") {
    http::DetokenizeBody d;
    if (auto e = http::ParseDetokenizeBody(r.body, &d)) {
      (void)http::ErrorJson(*e);
    } else {
      // The text a tokenizer gives back may be any bytes.
      (void)http::DetokenizeJson(std::string(
          r.body.substr(0, std::min<size_t>(r.body.size(), d.tokens.size()))));
    }
    return 0;
  }
  http::Endpoint endpoint;
  if (r.method == "POST" && r.path == "/v1/completions") {
    endpoint = http::Endpoint::kCompletions;
  } else if (r.method == "POST" && r.path == "/v1/chat/completions") {
    endpoint = http::Endpoint::kChat;
  } else {
    http::ApiError e;
    e.http_status = 404;
    e.message = absl::StrCat("no route for ", r.method, " ", r.path);
    (void)http::ErrorJson(e);
    return 0;
  }
  http::ParsedRequest p;
  if (auto e = http::ParseRequest(endpoint, r.body, &p)) {
    (void)http::ErrorJson(*e);
    return 0;
  }
  if (!p.model.empty()) {
    http::ApiError e;
    e.message = absl::StrCat("The model '", p.model, "' does not exist");
    (void)http::ErrorJson(e);
  }
  if (endpoint == http::Endpoint::kChat) {
    auto prompt = chatml.Render(p.messages);
    if (!prompt.ok()) {
      http::ApiError e;
      e.message = std::string(prompt.status().message());
      (void)http::ErrorJson(e);
    }
  }
  return 0;
}
