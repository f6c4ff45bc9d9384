#include "tests/integration/curl.h"

#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/process.h"

namespace latentkv::testing {

// POST (or GET without a body) with curl; -N: no buffering of streams.
HttpResult Curl(int port, const std::string& path, const std::string& body) {
  std::vector<std::string> args = {
      "curl",
      "-sS",
      "-N",
      "--max-time",
      "60",
      "-w",
      "\n%{http_code}",
      "http://127.0.0.1:" + std::to_string(port) + path};
  if (!body.empty()) {
    args.insert(args.end(),
                {"-H", "Content-Type: application/json", "-d", body});
  }
  int code = -1;
  std::string out = RunCommand(args, &code);
  EXPECT_EQ(code, 0) << out;
  HttpResult r;
  const size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return r;
  r.status = std::atoi(out.c_str() + nl + 1);
  r.body = out.substr(0, nl);
  return r;
}

}  // namespace latentkv::testing
