// Helpers shared by the transform tests: the real stories260K model converted
// to a model directory, its text, and logit comparison.
#ifndef LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_
#define LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/transform/forward.h"
#include "model/transform/kv_latent.h"
#include "model/weights.h"

namespace latentkv::model::transform::testing {

// The TinyStories excerpt (one story paragraph per non-empty line).
std::string TextPath();

// A fresh, empty directory under the test temp dir.
std::string NewDir(const std::string& name);

// stories260K (dim 64, 8 heads, 4 KV heads, head size 8, 5 layers, vocab
// 512) converted once per process with ConvertLlama2c; the directory path.
const std::string& Stories260kDir();

// A few token sequences (ids < 512, BOS first) for logit comparisons.
std::vector<std::vector<int32_t>> SampleSequences();

// The model at `dir` loaded as f32, or null after a test failure.
std::unique_ptr<ModelWeights> LoadOrNull(const std::string& dir);

// `lines` non-empty lines of TextPath() after the first `skip`, encoded
// for stories260K (empty after a test failure).
std::vector<std::vector<int32_t>> Stories260kDocs(int skip, int lines);

// KV-Latent options for stories260K with partial rotary keys: d_qk 6 (rope
// 2, 4 position-free dims), d_vo 4 in every layer and KV head (no rank
// allocation, no cross-head latent),
// calibrated on the first `calib_lines` lines.
KvLatentOptions PartialLatentOptions(int calib_lines);

// Calibrate(w, docs) without the attention scores: the moments, the joint
// key/value moment included; empty after a test failure.
std::vector<LayerStats> MomentsOrEmpty(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs);

// One layer's activations, at stories260K's shapes (hidden 64, 8 query
// heads and 4 KV heads of 8 dims): pre-RoPE q [T, 8, 8] and k [T, 4, 8]
// appended over every document observed; the normed input x and the
// attention output y [T, 64] of the last document (its `last_tokens`).
class LayerCapture : public LayerObserver {
 public:
  explicit LayerCapture(int layer) : layer_(layer) {}
  void Observe(const LayerActivations& a) override;
  int64_t tokens = 0, last_tokens = 0;
  std::vector<double> q, k, x, y;

 private:
  int layer_;
};

// max |a - b| / max |b| over the vectors (same size required).
double MaxRelativeError(const std::vector<double>& a,
                        const std::vector<double>& b);

}  // namespace latentkv::model::transform::testing

#endif  // LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_
