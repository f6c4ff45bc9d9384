// KV-Latent's option parsers and the per-pair score selection of rotary
// pairs (kv_latent.h).
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "model/transform/kv_latent.h"

namespace latentkv::model::transform {

absl::StatusOr<PairCriterion> ParsePairCriterion(absl::string_view text) {
  if (text == "auto") return PairCriterion::kAuto;
  if (text == "rotation") return PairCriterion::kRotation;
  if (text == "search") return PairCriterion::kOutputSearch;
  if (text == "logit-variance") return PairCriterion::kLogitVariance;
  if (text == "attention") return PairCriterion::kAttentionMagnitude;
  if (text == "magnitude") return PairCriterion::kMagnitude;
  return absl::InvalidArgumentError(absl::StrCat(
      "--pairs must be auto, rotation, search, logit-variance, attention or "
      "magnitude; got '",
      text, "'"));
}

absl::StatusOr<KvLatentInit> ParseKvLatentInit(absl::string_view text) {
  if (text == "strided") return KvLatentInit::kStrided;
  if (text == "calibrated") return KvLatentInit::kCalibrated;
  return absl::InvalidArgumentError(
      absl::StrCat("--init must be strided or calibrated, got '", text, "'"));
}

absl::Status ParseKvLatentDims(absl::string_view text,
                               KvLatentOptions* options) {
  int d_qk = -1, d_vo = -1;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, '=');
    int value = 0;
    if (kv.size() != 2 || !absl::SimpleAtoi(kv[1], &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv-latent wants d_qk=A,d_vo=B; cannot parse '", part, "'"));
    }
    if (kv[0] == "rope") {
      if (value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--kv-latent: rope must be >= 0, got ", value));
      }
      options->rope_dims = value;
    } else if (kv[0] == "d_qk") {
      d_qk = value;
    } else if (kv[0] == "d_vo") {
      d_vo = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv-latent: unknown key '", kv[0], "' (want d_qk, d_vo, rope)"));
    }
  }
  if (d_qk < 0 || d_vo < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-latent needs both d_qk and d_vo, got '", text, "'"));
  }
  options->d_qk = d_qk;
  options->d_vo = d_vo;
  return absl::OkStatus();
}

std::vector<int> SelectRotaryPairs(const LayerStats& s, int d_qk,
                                   PairCriterion criterion) {
  const int half = s.d_qk / 2, group = s.num_heads / s.num_kv_heads;
  std::vector<double> score(half, 0.0);
  for (int h = 0; h < s.num_heads; ++h) {
    for (int j = 0; j < half; ++j) {
      const int i = h * half + j;
      switch (criterion) {
        case PairCriterion::kLogitVariance:
          score[j] += s.pair_logit_var[i];
          break;
        case PairCriterion::kAttentionMagnitude:
          score[j] += s.pair_attn_mag[i];
          break;
        case PairCriterion::kMagnitude:
        case PairCriterion::kOutputSearch:  // not per-pair scores
        case PairCriterion::kRotation:
        case PairCriterion::kAuto:
          score[j] += s.q_pair_abs[i] * s.k_pair_abs[(h / group) * half + j];
          break;
      }
    }
  }
  std::vector<int> order(half);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return score[a] > score[b]; });
  order.resize(d_qk / 2);
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace latentkv::model::transform
