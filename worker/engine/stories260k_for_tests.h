// Test support: the real stories260K checkpoint (../shared/models),
// converted once per test binary into a temporary model directory and
// loaded (f32). Tests define LATENTKV_SHARED_DIR (the latentkv_test CMake
// function does).
#ifndef LATENTKV_WORKER_ENGINE_STORIES260K_FOR_TESTS_H_
#define LATENTKV_WORKER_ENGINE_STORIES260K_FOR_TESTS_H_

#include <stdlib.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/weights.h"

namespace latentkv::worker {

inline std::shared_ptr<const model::ModelWeights> Stories260k() {
  static std::shared_ptr<const model::ModelWeights> w = [] {
    std::string dir = "/tmp/latentkv-stories260k-XXXXXX";
    EXPECT_NE(mkdtemp(dir.data()), nullptr);
    const std::string m =
        std::string(LATENTKV_SHARED_DIR) + "/models/stories260K";
    EXPECT_TRUE(model::ConvertLlama2c(m + "/stories260K.bin", m + "/tok512.bin",
                                      dir + "/m")
                    .ok());
    auto loaded = model::LoadModel(dir + "/m");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return std::shared_ptr<const model::ModelWeights>(std::move(*loaded));
  }();
  return w;
}

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_STORIES260K_FOR_TESTS_H_
