// Helpers shared by the transform tests: the real stories260K model converted
// to a model directory, its text, and logit comparison.
#ifndef LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_
#define LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

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

// max |a - b| / max |b| over the vectors (same size required).
double MaxRelativeError(const std::vector<double>& a,
                        const std::vector<double>& b);

}  // namespace latentkv::model::transform::testing

#endif  // LATENTKV_MODEL_TRANSFORM_TEST_UTIL_H_
