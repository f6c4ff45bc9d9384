// Test support: HTTP requests to a local server with curl (a real client,
// no shared code with the server's).
#ifndef LATENTKV_TESTS_INTEGRATION_CURL_H_
#define LATENTKV_TESTS_INTEGRATION_CURL_H_

#include <string>

namespace latentkv::testing {

struct HttpResult {
  int status = 0;
  std::string body;
};

// POST `body` as JSON to 127.0.0.1:port/path (GET when `body` is empty);
// -N: streams are not buffered. A curl failure is a test failure.
HttpResult Curl(int port, const std::string& path, const std::string& body);

}  // namespace latentkv::testing

#endif  // LATENTKV_TESTS_INTEGRATION_CURL_H_
