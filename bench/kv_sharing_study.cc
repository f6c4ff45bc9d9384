// Would an MLA-style KV cache pay? Prints, for a model directory and a
// uniform KV-Latent budget, how the per-head latents of today's engine
// compare with one latent across KV heads (K and V apart) and with one
// latent shared by K and V (model/transform/latent_sharing.h), in residual
// and in the KV bytes each needs to match the per-head residual.
//
//   kv_sharing_study --model /tmp/smol --calib-text T --d_qk 32 --d_vo 32
//
// A plain main (a calibration study, not a timing): one table per key
// weight, ratios against the per-head variant measured in the same run.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "model/transform/calibration.h"
#include "model/transform/kv_latent.h"
#include "model/transform/latent_maps.h"
#include "model/transform/latent_sharing.h"
#include "model/weights.h"

ABSL_FLAG(std::string, model, "", "model directory (f32 safetensors)");
ABSL_FLAG(std::string, calib_text, "", "calibration text, a doc per line");
ABSL_FLAG(int, calib_lines, 200, "calibration lines");
ABSL_FLAG(int, d_qk, 32, "uniform per-head query/key dims");
ABSL_FLAG(int, d_vo, 32, "uniform per-head value dims");
ABSL_FLAG(int, rope, -1, "rotary dims per head (-1: 3/4 of d_qk)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace tr = latentkv::model::transform;
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto w = latentkv::model::LoadModel(dir);
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
    return 1;
  }
  tr::CalibrationTextOptions text;
  text.path = absl::GetFlag(FLAGS_calib_text);
  text.max_lines = absl::GetFlag(FLAGS_calib_lines);
  auto docs = tr::LoadCalibrationDocs(dir, (*w)->config, text);
  if (!docs.ok()) {
    std::fprintf(stderr, "%s\n", docs.status().ToString().c_str());
    return 1;
  }
  tr::CalibrationOptions co;
  co.attention_scores = false;
  co.kv_joint_moment = true;
  auto stats = tr::Calibrate(**w, *docs, co);
  if (!stats.ok()) {
    std::fprintf(stderr, "%s\n", stats.status().ToString().c_str());
    return 1;
  }
  tr::SharingOptions o;
  o.d_qk = absl::GetFlag(FLAGS_d_qk);
  o.d_vo = absl::GetFlag(FLAGS_d_vo);
  const int rope = absl::GetFlag(FLAGS_rope) < 0 ? tr::DefaultRopeDims(o.d_qk)
                                                 : absl::GetFlag(FLAGS_rope);
  std::vector<std::vector<int>> kept;
  for (int l = 0; l < (*w)->config.num_layers; ++l) {
    kept.push_back(tr::TopPairs(
        tr::RotationPairScores((*stats)[l], (*w)->layers[l].rope_inv_freq, 512),
        rope / 2));
  }
  auto r = tr::StudyLatentSharing(**w, *stats, kept, o);
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  const size_t scales = o.alpha_scales.size();
  const size_t layers = r->size() / scales;
  std::printf(
      "d_qk %d (rotary %d) d_vo %d per head; means over %zu layers; "
      "residuals relative to keeping nothing; bytes relative to per head\n",
      o.d_qk, rope, o.d_vo, layers);
  std::printf(
      "| key weight / alpha0 | per head residual | joint / per head | shared "
      "/ per head | joint bytes to match | shared bytes to match |\n"
      "|---|---|---|---|---|---|\n");
  for (size_t a = 0; a < scales; ++a) {
    double ph = 0, jr = 0, sr = 0, jb = 0, sb = 0;
    for (size_t l = 0; l < layers; ++l) {
      const tr::SharingLayerResult& x = (*r)[l * scales + a];
      const double full_bytes = x.rotary_dims + x.budget_dims;
      ph += x.per_head.residual / x.total;
      jr += x.joint.residual / x.per_head.residual;
      sr += x.shared.residual / x.per_head.residual;
      jb += (x.rotary_dims + x.joint.dims_to_match) / full_bytes;
      sb += (x.rotary_dims + x.shared.dims_to_match) / full_bytes;
    }
    const double n = static_cast<double>(layers);
    std::printf("| %g | %.4f | %.3f | %.3f | %.3f | %.3f |\n",
                o.alpha_scales[a], ph / n, jr / n, sr / n, jb / n, sb / n);
  }
  return 0;
}
