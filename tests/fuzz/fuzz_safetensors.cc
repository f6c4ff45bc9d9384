// safetensors files (model/safetensors.h): the 8-byte length, the JSON
// header, dtypes, shapes and data offsets. Every tensor's bytes are read, so
// an entry pointing outside the mapping shows up under ASan.
#include <cstddef>
#include <cstdint>

#include "model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace lm = latentkv::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static latentkv::fuzz::MemFile file;
  file.Write(data, size);
  auto st = lm::SafetensorsFile::Open(file.path());
  if (!st.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : (*st)->tensors()) {
    if ((*st)->Find(name) != &t) __builtin_trap();
    if (t.numel() < 0) __builtin_trap();
    for (size_t i = 0; i < t.nbytes; i += 61) sink = sink ^ t.data[i];
    if (t.nbytes > 0) sink = sink ^ t.data[t.nbytes - 1];
  }
  return 0;
}
