#include "model/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace latentkv::model {
namespace {

constexpr double kPi = 3.14159265358979323846;

// YaRN: the (fractional) pair index at which a frequency completes
// `rotations` turns over `context` positions.
double CorrectionDim(double rotations, int d, double base, double context) {
  return d * std::log(context / (rotations * 2 * kPi)) / (2 * std::log(base));
}

}  // namespace

void ApplyRopeScaling(const ModelConfig& c, int layer, int d,
                      std::vector<float>* inv) {
  if (!c.rope_scaled(layer)) return;
  const int half = d / 2;
  std::vector<double> f(inv->begin(), inv->end());
  if (static_cast<int>(c.rope_freq_factors.size()) == half) {
    for (int j = 0; j < half; ++j) f[j] /= c.rope_freq_factors[j];
  }
  using Type = ModelConfig::RopeScaling::Type;
  const ModelConfig::RopeScaling& rs = c.rope_scaling;
  const double factor = rs.factor;
  const double context = rs.original_max_position > 0
                             ? rs.original_max_position
                             : c.max_position_embeddings;
  switch (rs.type) {
    case Type::kNone:
      break;
    case Type::kLinear:
      for (double& x : f) x /= factor;
      break;
    case Type::kLlama3: {
      const double low_wavelen = context / rs.low_freq_factor;
      const double high_wavelen = context / rs.high_freq_factor;
      for (double& x : f) {
        const double wavelen = 2 * kPi / x;
        if (wavelen > low_wavelen) {
          x /= factor;  // low frequencies: interpolated
        } else if (wavelen >= high_wavelen) {
          const double smooth = (context / wavelen - rs.low_freq_factor) /
                                (rs.high_freq_factor - rs.low_freq_factor);
          x = (1 - smooth) * x / factor + smooth * x;
        }  // high frequencies: unchanged
      }
      break;
    }
    case Type::kYarn: {
      // The base the unscaled table was built with.
      const double base = c.window(layer) > 0 && c.rope_local_theta > 0
                              ? c.rope_local_theta
                              : c.rope_theta;
      double low = std::floor(CorrectionDim(rs.beta_fast, d, base, context));
      double high = std::ceil(CorrectionDim(rs.beta_slow, d, base, context));
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(d - 1));
      if (low == high) high += 0.001;
      for (int j = 0; j < half; ++j) {
        // 1 - ramp: 1 for pairs below `low` (extrapolated), 0 above `high`.
        const double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
        const double extrapolate = 1 - ramp;
        f[j] = f[j] / factor * (1 - extrapolate) + f[j] * extrapolate;
      }
      break;
    }
  }
  for (int j = 0; j < half; ++j) (*inv)[j] = static_cast<float>(f[j]);
}

}  // namespace latentkv::model
