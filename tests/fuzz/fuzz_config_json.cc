// config.json (model/config.h): parsing, validation, the bounds a hostile
// file must not get past, and the round trip through ToJson.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/config.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = lm::ModelConfig::FromJson(
      std::string(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) return 0;
  (void)config->CheckBounds();
  if (!config->Validate().ok()) return 0;
  (void)config->KvValuesPerToken();
  (void)config->ParameterCount();
  auto again = lm::ModelConfig::FromJson(config->ToJson());
  if (!again.ok() || again->ToJson() != config->ToJson()) __builtin_trap();
  return 0;
}
