// The OpenAI JSON -> proto mapping (coordinator/http/openai_api.h): a
// request body from raw bytes, first through the nesting check that runs
// before nlohmann's parser, then ParseRequest for the endpoint the first
// byte picks. What a parsed request feeds on is exercised as the HTTP
// handler does: chat messages rendered by the ChatML template, and the
// response JSON and stream chunks built around the request's strings.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/http/chat_template.h"
#include "coordinator/http/openai_api.h"
#include "tests/fuzz/chatml.h"
#include "tests/fuzz/fuzz_util.h"

namespace http = latentkv::coordinator::http;
namespace pb = latentkv::v1;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const http::ChatTemplate chatml = *http::ChatTemplate::FromJinja(
      latentkv::fuzz::kChatMlTemplate, "<|im_start|>", "<|im_end|>", false);
  latentkv::fuzz::Input in(data, size);
  const http::Endpoint endpoint =
      (in.Byte() & 1) ? http::Endpoint::kChat : http::Endpoint::kCompletions;
  const std::string_view body = in.Rest();
  (void)http::JsonNestingExceeds(body, http::kMaxJsonDepth);
  http::ParsedRequest p;
  if (auto error = http::ParseRequest(endpoint, body, &p)) {
    (void)http::ErrorJson(*error);
    return 0;
  }
  std::string text = p.generate.prompt();
  if (endpoint == http::Endpoint::kChat) {
    auto prompt = chatml.Render(p.messages);
    if (prompt.ok()) text = *prompt;
  }
  http::ResponseMeta meta;
  meta.endpoint = endpoint;
  meta.id = "cmpl-fuzz";
  meta.model = p.model;
  meta.return_token_ids = p.return_token_ids;
  meta.logprobs = p.logprobs;
  http::ChoicePart part;
  part.text = text;
  part.token_ids.assign(p.generate.prompt_token_ids().begin(),
                        p.generate.prompt_token_ids().end());
  // Log-probabilities whose token bytes are slices of the request's own
  // text (any bytes, invalid UTF-8 included), as the coordinator fills them.
  for (size_t i = 0; p.logprobs && i < part.token_ids.size() && i < 64; ++i) {
    pb::TokenLogprobs& t = part.logprobs.emplace_back();
    t.set_token(text.substr(std::min(i, text.size()), 3));
    t.set_logprob(-static_cast<float>(part.token_ids[i]));
    for (uint32_t k = 0; k < p.generate.sampling().logprobs(); ++k) {
      pb::TopLogprob* a = t.add_top();
      a->set_token(text.substr(std::min<size_t>(k, text.size()), 2));
      a->set_logprob(k == 0 ? -INFINITY : -1.0f * k);
    }
  }
  pb::Usage usage;
  usage.set_prompt_tokens(static_cast<uint32_t>(part.token_ids.size()));
  (void)http::ResponseJson(meta, part, pb::FINISH_REASON_STOP, usage);
  (void)http::SseEvent(
      http::ChunkJson(meta, part, pb::FINISH_REASON_UNSPECIFIED, true));
  if (p.include_usage) (void)http::UsageChunkJson(meta, usage);
  return 0;
}
