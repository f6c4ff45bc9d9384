// Test support: a safetensors file's tensors read as f32, each passed through
// an edit, in a writer (the file itself closed again, so the writer may
// overwrite it). The engine tests use it to turn WriteSyntheticModel's small
// random weights into ones whose logits and attention vary.
#ifndef LATENTKV_WORKER_ENGINE_EDITED_TENSORS_FOR_TESTS_H_
#define LATENTKV_WORKER_ENGINE_EDITED_TENSORS_FOR_TESTS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "model/safetensors.h"

namespace latentkv::worker {

// `edit(name, shape, &values)` is called once per tensor, in the file's
// order; the result holds every tensor (f32) as edited.
inline model::SafetensorsWriter EditedTensors(
    const std::string& path,
    const std::function<void(const std::string& name,
                             const std::vector<int64_t>& shape,
                             std::vector<float>* values)>& edit) {
  model::SafetensorsWriter w;
  auto file = model::SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return w;
  for (const auto& [name, t] : (*file)->tensors()) {
    std::vector<float> v(t.numel());
    ConvertToF32(t.data, t.dtype, t.numel(), v.data());
    edit(name, t.shape, &v);
    w.AddF32(name, DType::kF32, t.shape, v.data());
  }
  return w;
}

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_EDITED_TENSORS_FOR_TESTS_H_
