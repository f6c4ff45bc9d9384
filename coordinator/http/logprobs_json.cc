#include "coordinator/http/logprobs_json.h"

#include <cmath>
#include <string>

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

// OpenAI and vLLM write -9999.0 for a token the model rules out; NaN (the
// first prompt token's, under echo) is null.
json Finite(float lp) {
  if (std::isnan(lp)) return nullptr;
  return std::isfinite(lp) ? double{lp} : -9999.0;
}

json Bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json ChatEntry(const std::string& token, float logprob) {
  return json{
      {"token", token}, {"logprob", Finite(logprob)}, {"bytes", Bytes(token)}};
}

}  // namespace

json LogprobsJson(Endpoint endpoint, const std::vector<pb::TokenLogprobs>& lp,
                  size_t text_offset) {
  if (endpoint == Endpoint::kChat) {
    json content = json::array();
    for (const pb::TokenLogprobs& t : lp) {
      json e = ChatEntry(t.token(), t.logprob());
      json top = json::array();
      for (const pb::TopLogprob& a : t.top()) {
        top.push_back(ChatEntry(a.token(), a.logprob()));
      }
      e["top_logprobs"] = std::move(top);
      content.push_back(std::move(e));
    }
    return json{{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), logprobs = json::array(), top = json::array(),
       offsets = json::array();
  bool any_top = false;
  for (const pb::TokenLogprobs& t : lp) {
    tokens.push_back(t.token());
    logprobs.push_back(Finite(t.logprob()));
    json alts = json::object();
    for (const pb::TopLogprob& a : t.top()) {
      // Two alternatives with the same text keep the likelier (first).
      if (!alts.contains(a.token())) alts[a.token()] = Finite(a.logprob());
      any_top = true;
    }
    top.push_back(std::isnan(t.logprob()) ? json() : std::move(alts));
    offsets.push_back(text_offset);
    text_offset += t.token().size();
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(logprobs)},
              {"top_logprobs", any_top || lp.empty() ? std::move(top) : json()},
              {"text_offset", std::move(offsets)}};
}

}  // namespace latentkv::coordinator::http
