// What the OpenAI request parsers share (openai_api.cc,
// structured_output_json.cc): a 400 naming the offending field, and whether
// a key is present in a JSON object (absent and null alike are not), for
// nlohmann's sorted and key-ordered objects.
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_REQUEST_FIELDS_H_
#define LATENTKV_COORDINATOR_HTTP_REQUEST_FIELDS_H_

#include <string>
#include <utility>

#include "coordinator/http/openai_api.h"

namespace latentkv::coordinator::http {

inline ApiError Bad(std::string param, std::string message) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

template <typename Json>
bool Present(const Json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_REQUEST_FIELDS_H_
