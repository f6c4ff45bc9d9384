#include "model/transform/test_util.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/gguf_loader.h"
#include "model/transform/calibration.h"

namespace latentkv::model::transform::testing {

std::unique_ptr<ModelWeights> LoadOrNull(const std::string& dir) {
  auto w = LoadModel(dir);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? std::move(*w) : nullptr;
}

std::vector<std::vector<int32_t>> Stories260kDocs(int skip, int lines) {
  auto c = LoadModelConfig(Stories260kDir());
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  CalibrationTextOptions t;
  t.path = TextPath();
  t.skip_lines = skip;
  t.max_lines = lines;
  auto docs = LoadCalibrationDocs(Stories260kDir(), *c, t);
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? *docs : std::vector<std::vector<int32_t>>();
}

KvLatentOptions PartialLatentOptions(int calib_lines) {
  KvLatentOptions o;
  o.d_qk = 6;
  o.d_vo = 4;
  o.rope_dims = 2;
  o.allocate_ranks = false;  // uniform dims (rank_allocation_test turns it on)
  o.joint_heads = false;     // per-head latents (joint_latent_test: on)
  o.calibration.path = TextPath();
  o.calibration.max_lines = calib_lines;
  return o;
}

std::vector<LayerStats> MomentsOrEmpty(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs) {
  CalibrationOptions co;
  co.attention_scores = false;
  co.kv_joint_moment = true;
  auto s = Calibrate(w, docs, co);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::vector<LayerStats>();
}

void LayerCapture::Observe(const LayerActivations& a) {
  if (a.layer != layer_) return;
  q.insert(q.end(), a.q, a.q + a.tokens * 8 * 8);
  k.insert(k.end(), a.k, a.k + a.tokens * 4 * 8);
  tokens += a.tokens;
  x.assign(a.input, a.input + a.tokens * 64);
  y.assign(a.output, a.output + a.tokens * 64);
  last_tokens = a.tokens;
}

std::string TextPath() {
  return std::string(LATENTKV_SHARED_DIR) +
         "/text/tinystories_train_excerpt.txt";
}

std::string NewDir(const std::string& name) {
  // Per process: ctest runs each test case as its own process, two at a
  // time, and a shared path let one process rewrite a model another had
  // memory-mapped (SIGBUS).
  const std::string dir = ::testing::TempDir() + "/transform_test_" + name +
                          "_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

const std::string& Stories260kDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(NewDir("stories260k"));
    const std::string m =
        std::string(LATENTKV_SHARED_DIR) + "/models/stories260K/";
    const absl::Status s =
        ConvertLlama2c(m + "stories260K.bin", m + "tok512.bin", *d);
    if (!s.ok()) {
      ADD_FAILURE() << s;
      std::abort();
    }
    return d;
  }();
  return *dir;
}

std::vector<std::vector<int32_t>> SampleSequences() {
  return {{1, 403, 407, 261, 378, 500, 266, 289, 33, 444, 270, 5, 300, 511},
          {1, 2, 97, 260, 410, 359, 403, 271, 13},
          {1,   346, 302, 261, 290, 354, 275, 265, 376, 411, 259,
           411, 259, 411, 259, 280, 30,  263, 324, 407, 266, 46}};
}

double MaxRelativeError(const std::vector<double>& a,
                        const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace latentkv::model::transform::testing
