#include "worker/residency/flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, kv_policy, "none",
          "KV residency: none (full cache) | spindle (SnapKV eviction in deep "
          "layers, codebooks in shallow layers)");
ABSL_FLAG(double, kv_budget, 0.4,
          "spindle: mean fraction of the prompt each eviction layer keeps, "
          "(0, 1]");
ABSL_FLAG(double, kv_pyramid_beta, 20.0,
          "spindle: PyramidKV shape, deepest layer keeps mean/beta (1: "
          "uniform)");
ABSL_FLAG(int, kv_window, 32,
          "SnapKV observation window: last queries that score, always kept");
ABSL_FLAG(int, kv_pool, 7, "Max-pool width over slot scores (odd)");
ABSL_FLAG(int, kv_codebook_layers, -1,
          "spindle: shallow layers stored as codebooks (-1: num_layers/4)");
ABSL_FLAG(double, kv_theta_k, 0.98, "spindle: codebook cosine threshold, K");
ABSL_FLAG(double, kv_theta_v, 0.95, "spindle: codebook cosine threshold, V");
ABSL_FLAG(std::string, kv_capacity, "",
          "Predefined KV capacity in tokens per KV head: one value or one per "
          "layer, comma-separated (empty/0: unbounded)");
ABSL_FLAG(bool, kv_bound_windows, true,
          "Bound sliding-window layers (Gemma 3's local layers) to 2x their "
          "window in KV tokens; false keeps them whole, and keeps prefix "
          "caching for those models");
ABSL_FLAG(int, kv_capacity_slack, 0,
          "Tokens evicted below the capacity when a layer is full (0: "
          "capacity/8)");

namespace latentkv::worker {

absl::StatusOr<ResidencyOptions> ResidencyOptionsFromFlags() {
  ResidencyOptions o;
  o.policy = absl::GetFlag(FLAGS_kv_policy);
  o.budget = absl::GetFlag(FLAGS_kv_budget);
  o.pyramid_beta = absl::GetFlag(FLAGS_kv_pyramid_beta);
  o.window = absl::GetFlag(FLAGS_kv_window);
  o.pool_kernel = absl::GetFlag(FLAGS_kv_pool);
  o.codebook_layers = absl::GetFlag(FLAGS_kv_codebook_layers);
  o.theta_k = static_cast<float>(absl::GetFlag(FLAGS_kv_theta_k));
  o.theta_v = static_cast<float>(absl::GetFlag(FLAGS_kv_theta_v));
  auto cap = ParseCapacityList(absl::GetFlag(FLAGS_kv_capacity));
  if (!cap.ok()) return cap.status();
  o.capacity = *cap;
  o.capacity_slack = absl::GetFlag(FLAGS_kv_capacity_slack);
  o.bound_windows = absl::GetFlag(FLAGS_kv_bound_windows);
  return o;
}

std::vector<std::string> ResidencyFlagArgs() {
  return {
      absl::StrCat("--kv_policy=", absl::GetFlag(FLAGS_kv_policy)),
      absl::StrCat("--kv_budget=", absl::GetFlag(FLAGS_kv_budget)),
      absl::StrCat("--kv_pyramid_beta=", absl::GetFlag(FLAGS_kv_pyramid_beta)),
      absl::StrCat("--kv_window=", absl::GetFlag(FLAGS_kv_window)),
      absl::StrCat("--kv_pool=", absl::GetFlag(FLAGS_kv_pool)),
      absl::StrCat("--kv_codebook_layers=",
                   absl::GetFlag(FLAGS_kv_codebook_layers)),
      absl::StrCat("--kv_theta_k=", absl::GetFlag(FLAGS_kv_theta_k)),
      absl::StrCat("--kv_theta_v=", absl::GetFlag(FLAGS_kv_theta_v)),
      absl::StrCat("--kv_capacity=", absl::GetFlag(FLAGS_kv_capacity)),
      absl::StrCat("--kv_capacity_slack=",
                   absl::GetFlag(FLAGS_kv_capacity_slack)),
      absl::StrCat("--kv_bound_windows=",
                   absl::GetFlag(FLAGS_kv_bound_windows) ? "true" : "false"),
  };
}

}  // namespace latentkv::worker
