// RoPE frequency tables under the config's scaling (ModelConfig::
// rope_scaling and rope_freq_factors): linear, Llama 3.1's per-frequency
// smoothing, YaRN's ramp, and llama.cpp's stored per-pair factors. Written
// from HF transformers' modeling_rope_utils (_compute_linear_scaling_rope_
// parameters, _compute_llama3_parameters, _compute_yarn_parameters).
// Thread-safety: pure functions.
#ifndef LATENTKV_MODEL_ROPE_SCALING_H_
#define LATENTKV_MODEL_ROPE_SCALING_H_

#include <vector>

#include "model/config.h"

namespace latentkv::model {

// Rescales `inv` [d / 2], the unscaled inverse frequencies base^(-2j/d) of a
// layer with head width d, in place (in double, rounded once to f32): first
// divided by rope_freq_factors when given, then the rope_scaling type. No-op
// for a layer rope_scaled() excludes.
void ApplyRopeScaling(const ModelConfig& config, int layer, int d,
                      std::vector<float>* inv);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_ROPE_SCALING_H_
