// Internal to model/config.cc: config.json keys of the architecture features
// beyond Llama's (ModelConfig's hidden_act ... rope_local_theta).
#ifndef LATENTKV_MODEL_CONFIG_FEATURES_H_
#define LATENTKV_MODEL_CONFIG_FEATURES_H_

#include "absl/status/status.h"
#include "model/config.h"
#include "nlohmann/json.hpp"

namespace latentkv::model::internal {

// Reads the feature keys of `j` into `c` (num_layers already set). Also
// refuses HF checkpoints of architectures whose weights need more than these
// keys (model_type gemma*: HF stores their norm weights as w - 1).
// InvalidArgument / Unimplemented naming the key.
absl::Status ReadArchFeatures(const nlohmann::json& j, ModelConfig* c);
// Writes the features that differ from Llama's defaults.
void WriteArchFeatures(const ModelConfig& c, nlohmann::json* j);
// The features' invariants (Validate()).
absl::Status ValidateArchFeatures(const ModelConfig& c);

}  // namespace latentkv::model::internal

#endif  // LATENTKV_MODEL_CONFIG_FEATURES_H_
