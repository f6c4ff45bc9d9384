// `latentkv convert` and `latentkv inspect`.
#include "model/convert.h"

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "model/config.h"
#include "model/gguf_loader.h"
#include "model/transform/gguf_convert.h"
#include "model/transform/gqa.h"
#include "model/transform/kv_latent.h"
#include "model/weights.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {
namespace {

// Shapes of public models, for synthetic (random-weight) checkpoints.
std::map<std::string, model::ModelConfig> SyntheticShapes() {
  const auto make = model::ModelConfig::Llama;
  return {
      {"stories15m", make(288, 768, 6, 6, 6, 32000, 256, 10000)},
      {"stories42m", make(512, 1376, 8, 8, 8, 32000, 1024, 10000)},
      {"stories110m", make(768, 2048, 12, 12, 12, 32000, 1024, 10000)},
      {"llama3-1b", make(2048, 8192, 16, 32, 8, 128256, 8192, 500000)},
      {"smollm2-135m", make(576, 1536, 30, 9, 3, 49152, 8192, 100000)},
  };
}

// convert --model DIR|FILE.gguf with --kv-latent or --kv-heads.
absl::Status ConvertModelDir(const ConvertOptions& o, DType dtype) {
  namespace tr = model::transform;
  if (!o.kv_latent.empty() && o.kv_heads > 0) {
    return absl::InvalidArgumentError(
        "give --kv-latent or --kv-heads, not both (convert twice: --kv-heads "
        "first, then --kv-latent on its output)");
  }
  tr::CalibrationTextOptions calib;
  calib.path = o.calib_text;
  calib.max_lines = o.calib_lines;
  if (o.kv_heads > 0) {
    tr::GqaOptions g;
    g.num_kv_heads = o.kv_heads;
    g.calibration = calib;
    g.dtype = dtype;
    return tr::ConvertGqa(o.model_dir, o.out, g);
  }
  if (o.kv_latent.empty()) {
    return absl::InvalidArgumentError(
        "convert --model DIR needs --kv-latent d_qk=A,d_vo=B or --kv-heads N");
  }
  tr::KvLatentOptions k;
  absl::Status s = tr::ParseKvLatentDims(o.kv_latent, &k);
  if (!s.ok()) return s;
  auto init = tr::ParseKvLatentInit(o.init);
  if (!init.ok()) return init.status();
  k.init = *init;
  k.refit_output = o.refit;
  auto pairs = tr::ParsePairCriterion(o.pairs);
  if (!pairs.ok()) return pairs.status();
  k.pair_criterion = *pairs;
  k.allocate_ranks = o.allocate != "off";
  k.joint_heads = o.joint_heads;
  k.joint_group = o.joint_group;
  k.allocate_joint = o.allocate_joint;
  if (k.allocate_ranks) {
    auto weight = tr::ParseAllocationWeight(o.allocate);
    if (!weight.ok()) return weight.status();
    k.allocation_weight = *weight;
  }
  k.distill.tokens = o.distill_tokens;
  k.distill.minutes = o.distill_minutes;
  k.distill.lr = o.distill_lr;
  k.distill_text.max_lines = o.distill_lines;
  k.sequential = o.sequential;
  k.drift = o.drift;
  if (o.sequential_target == "stream") {
    k.sequential_target = tr::SequentialTarget::kSourceOnStream;
  } else if (o.sequential_target != "source") {
    return absl::InvalidArgumentError("--sequential_target: source | stream");
  }
  k.calibration = calib;
  k.dtype = dtype;
  return tr::ConvertKvLatent(o.model_dir, o.out, k);
}

}  // namespace

int Convert(const ConvertOptions& o) {
  auto dtype = ParseDType(o.dtype);
  // safetensors output: float dtypes only.
  if (!dtype || !(*dtype == DType::kF32 || *dtype == DType::kBF16 ||
                  *dtype == DType::kF16)) {
    std::fprintf(stderr,
                 "--dtype must be f32, bf16 or f16 (the safetensors output; "
                 "quantize at load with --weights-dtype, or serve a .gguf as "
                 "stored)\n");
    return 2;
  }
  if (o.out.empty()) {
    std::fprintf(stderr, "--out DIR is required\n");
    return 2;
  }
  absl::Status st;
  if (!o.model_dir.empty()) {
    st = ConvertModelDir(o, *dtype);
  } else if (!o.synthetic.empty()) {
    auto shapes = SyntheticShapes();
    auto it = shapes.find(o.synthetic);
    if (it == shapes.end()) {
      std::fprintf(stderr,
                   "unknown --synthetic shape %s; known:", o.synthetic.c_str());
      for (const auto& [name, c] : shapes)
        std::fprintf(stderr, " %s", name.c_str());
      std::fprintf(stderr, "\n");
      return 2;
    }
    st = model::WriteSyntheticModel(it->second, o.out, *dtype, o.seed);
  } else if (o.from == "llama2c") {
    st = model::ConvertLlama2c(o.checkpoint, o.tokenizer, o.out, *dtype);
  } else if (o.from == "gguf") {
    st = model::transform::ConvertGguf(o.checkpoint, o.out, *dtype);
  } else {
    std::fprintf(stderr,
                 "give --from llama2c --checkpoint X.bin --tokenizer T.bin, "
                 "--from gguf --checkpoint X.gguf, "
                 "--synthetic SHAPE, or --model DIR with --kv-latent "
                 "d_qk=A,d_vo=B or --kv-heads N\n");
    return 2;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "convert failed: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

int Inspect(const std::string& dir, const std::string& weights_dtype,
            const std::string& kv_dtype,
            const worker::ResidencyOptions& residency) {
  const std::optional<DType> kv = ParseDType(kv_dtype);
  if (!kv || !IsKvDType(*kv)) {
    std::fprintf(stderr,
                 "--kv-dtype must be f32, bf16, f16 or fp8_e4m3, got '%s'\n",
                 kv_dtype.c_str());
    return 2;
  }
  const int64_t kv_elem = DTypeSize(*kv);
  auto dtype = model::ParseWeightsDType(weights_dtype);
  if (!dtype.ok()) {
    std::fprintf(stderr, "--weights-dtype: %s\n",
                 std::string(dtype.status().message()).c_str());
    return 2;
  }
  model::LoadOptions lo;
  lo.matrix_dtype = *dtype;
  auto w = model::LoadModel(dir, lo);
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
    return 1;
  }
  const model::ModelConfig& c = (*w)->config;
  std::printf("model=%s format=%s\n", dir.c_str(),
              model::IsGgufModel(dir) ? "gguf" : "safetensors");
  // Matrices in memory by dtype (as the engine would hold them).
  std::map<std::string, std::pair<int, int64_t>> by_dtype;
  auto count = [&](const model::Tensor& t) {
    auto& [n, bytes] = by_dtype[std::string(DTypeName(t.dtype))];
    ++n;
    bytes +=
        DTypeRowBytes(t.dtype, t.shape.back()) * (t.numel() / t.shape.back());
  };
  count((*w)->embed_tokens);
  if (!c.tie_word_embeddings) count((*w)->lm_head);
  for (const model::LayerWeights& lw : (*w)->layers) {
    for (const model::Tensor* t :
         {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.o_proj, &lw.gate_proj,
          &lw.up_proj, &lw.down_proj}) {
      count(*t);
    }
  }
  for (const auto& [name, nb] : by_dtype) {
    std::printf("matrices dtype=%s count=%d bytes=%lld\n", name.c_str(),
                nb.first, static_cast<long long>(nb.second));
  }
  std::printf(
      "hidden_size=%d intermediate_size=%d layers=%d heads=%d kv_heads=%d "
      "vocab=%d context=%d rope_theta=%g tied=%d\n",
      c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
      c.num_kv_heads, c.vocab_size, c.max_position_embeddings, c.rope_theta,
      c.tie_word_embeddings ? 1 : 0);
  // With --kv_* flags: the residency plan each layer would run.
  std::shared_ptr<const worker::ResidencyPlan> plan;
  auto p = worker::ResidencyPlan::CreateIfEnabled(
      residency, c.num_layers, c.num_heads, c.num_kv_heads, c.sliding_window);
  if (!p.ok()) {
    std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
    return 2;
  }
  plan = *p;
  if (plan != nullptr) {
    std::printf("kv_residency=%s\n", plan->Describe().c_str());
  }
  for (int l = 0; l < c.num_layers; ++l) {
    std::printf(
        "layer %d: d_qk=%d d_vo=%d kv_values_per_token=%lld "
        "kv_bytes_per_token_layer=%lld",
        l, c.qk_head_dim[l], c.vo_head_dim[l],
        static_cast<long long>(c.KvValuesPerTokenLayer(l)),
        static_cast<long long>(c.KvValuesPerTokenLayer(l) * kv_elem));
    if (plan != nullptr) {
      switch (plan->policy(l)) {
        case worker::LayerPolicy::kEvict:
          std::printf(" policy=snapkv kept_of_1000_prompt_tokens=%lld",
                      static_cast<long long>(plan->PromptBudget(l, 1000)));
          break;
        case worker::LayerPolicy::kCodebook:
          // Records are 16 bytes a token per KV head, plus the codewords.
          std::printf(" policy=codebook record_bytes_per_token=%d",
                      16 * c.num_kv_heads);
          break;
        default:
          std::printf(" policy=full");
      }
      if (plan->capacities()[l] > 0) {
        std::printf(
            " capacity_tokens=%lld max_kv_bytes=%lld",
            static_cast<long long>(plan->capacities()[l]),
            static_cast<long long>(plan->capacities()[l] *
                                   c.KvValuesPerTokenLayer(l) * kv_elem));
      }
    }
    std::printf("\n");
  }
  std::printf("parameters=%lld\n", static_cast<long long>(c.ParameterCount()));
  std::printf("kv_cache_dtype=%s\n", std::string(DTypeName(*kv)).c_str());
  std::printf("kv_bytes_per_token=%lld\n",
              static_cast<long long>(c.KvValuesPerToken() * kv_elem));
  if (plan != nullptr) {
    // Once every bounded layer is full, a further token costs only the
    // unbounded layers' bytes.
    int64_t unbounded = 0, bounded_bytes = 0;
    for (int l = 0; l < c.num_layers; ++l) {
      const int64_t cap = plan->capacities()[l];
      if (cap > 0) {
        bounded_bytes += cap * c.KvValuesPerTokenLayer(l) * kv_elem;
      } else {
        unbounded += c.KvValuesPerTokenLayer(l) * kv_elem;
      }
    }
    std::printf(
        "kv_bytes_per_token_past_capacity=%lld kv_bytes_bounded_layers=%lld\n",
        static_cast<long long>(unbounded),
        static_cast<long long>(bounded_bytes));
  }
  return 0;
}

}  // namespace latentkv::cli
