#include "tools/cli/local_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace latentkv::cli {

absl::StatusOr<LocalModel> LoadLocalModel(const LocalEngineOptions& options) {
  auto dtype = model::ParseWeightsDType(options.weights_dtype);
  if (!dtype.ok()) return dtype.status();
  model::LoadOptions lo;
  lo.matrix_dtype = *dtype;
  auto weights = model::LoadModel(options.model_dir, lo);
  if (!weights.ok()) return weights.status();
  auto tokenizer =
      model::LoadTokenizer(options.model_dir, (*weights)->config.vocab_size);
  if (!tokenizer.ok()) return tokenizer.status();
  auto activations = kernels::ParseActivationQuant(options.cpu_activations);
  if (!activations.ok()) return activations.status();
  kernels::BackendOptions bo;
  bo.cpu_activations = *activations;
  bo.cpu_q8_min_inputs = std::max<int64_t>(options.cpu_q8_min_inputs, 1);
  auto backend = kernels::CreateBackend(options.device, bo);
  if (!backend.ok()) return backend.status();
  LocalModel m;
  m.weights = std::move(*weights);
  m.tokenizer = std::move(*tokenizer);
  m.backend = std::move(*backend);
  return m;
}

absl::StatusOr<worker::KvStorage> MakeLocalCache(
    const LocalEngineOptions& options, const worker::ModelRunner& runner,
    kernels::Backend* backend) {
  worker::KvCacheOptions ko;
  ko.page_size = options.page_size;
  ko.max_bytes = options.kv_memory_mb << 20;
  const std::optional<DType> dtype = ParseDType(options.kv_dtype);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV dtype must be f32, bf16, f16 or fp8_e4m3, got ", options.kv_dtype));
  }
  ko.dtype = *dtype;
  return worker::CreateKvStorage(runner, backend, ko);
}

}  // namespace latentkv::cli
