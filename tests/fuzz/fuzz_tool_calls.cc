// Tool calls parsed out of model replies (coordinator/http/
// tool_call_parser.h), which a prompt can steer into any bytes. The first
// byte picks the format and the size of the pieces the reply streams in;
// the rest is the reply. Beyond no crash, hang or leak, the stream must
// agree with the whole reply: the content and the calls (names, ids,
// arguments) a client assembles from the streamed deltas are those of
// ParseToolOutput, and a reply with no possible call is all content.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "coordinator/http/tool_call_parser.h"
#include "tests/fuzz/fuzz_util.h"

namespace http = latentkv::coordinator::http;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  latentkv::fuzz::Input in(data, size);
  const uint8_t b = in.Byte();
  const auto format = (b & 1) != 0 ? http::ToolCallFormat::kLlama3Json
                                   : http::ToolCallFormat::kHermes;
  const size_t step = 1 + (b >> 1) % 16;
  const std::string reply(in.Rest());

  http::ToolCallParser parser(format);
  std::vector<http::ToolDelta> deltas;
  for (size_t i = 0; i < reply.size(); i += step) {
    for (auto& d : parser.Feed(std::string_view(reply).substr(i, step))) {
      deltas.push_back(std::move(d));
    }
  }
  for (auto& d : parser.Finish()) deltas.push_back(std::move(d));

  std::string content;
  std::vector<std::string> names, args;
  for (const http::ToolDelta& d : deltas) {
    switch (d.kind) {
      case http::ToolDelta::Kind::kContent:
        Check(!d.text.empty());
        content += d.text;
        break;
      case http::ToolDelta::Kind::kCallStart:
        Check(d.call == static_cast<int>(names.size()) && !d.name.empty() &&
              d.id.size() == 29);
        names.push_back(d.name);
        args.emplace_back();
        break;
      case http::ToolDelta::Kind::kArguments:
        Check(d.call >= 0 && d.call < static_cast<int>(args.size()));
        args[d.call] += d.text;
        break;
    }
  }
  Check(parser.calls() == static_cast<int>(names.size()));
  const http::ToolOutput whole = http::ParseToolOutput(format, reply);
  Check(whole.content == content);
  Check(whole.tool_calls.size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    Check(whole.tool_calls[i]["function"]["name"] == names[i]);
    Check(whole.tool_calls[i]["function"]["arguments"] == args[i]);
  }
  const bool may_call = format == http::ToolCallFormat::kHermes
                            ? reply.find("<tool_call>") != std::string::npos
                            : reply.find_first_of("{") != std::string::npos;
  if (!may_call) Check(names.empty() && content == reply);
  return 0;
}
