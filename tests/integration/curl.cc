#include "tests/integration/curl.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
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
  // The body goes through a file: the command line holds at most ~128 KiB
  // per argument.
  std::string file;
  if (!body.empty()) {
    file = MakeTempDir() + "/body.json";
    std::ofstream(file, std::ios::binary) << body;
    args.insert(args.end(), {"-H", "Content-Type: application/json",
                             "--data-binary", "@" + file});
  }
  int code = -1;
  std::string out = RunCommand(args, &code);
  if (!file.empty())
    std::filesystem::remove_all(std::filesystem::path(file).parent_path());
  EXPECT_EQ(code, 0) << out;
  HttpResult r;
  const size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return r;
  r.status = std::atoi(out.c_str() + nl + 1);
  r.body = out.substr(0, nl);
  return r;
}

}  // namespace latentkv::testing
