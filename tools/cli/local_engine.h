// Loading a model in-process for the CLI's local commands.
#ifndef LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_
#define LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "tools/cli/commands.h"
#include "worker/cache/kv_cache.h"
#include "worker/engine/model_runner.h"

namespace latentkv::cli {

struct LocalModel {
  std::shared_ptr<const model::ModelWeights> weights;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<kernels::Backend> backend;
};

absl::StatusOr<LocalModel> LoadLocalModel(const LocalEngineOptions& options);

// A KV cache (page table and pools in `backend` memory) for `runner`'s
// model with the options' page size, memory bound and KV dtype (for
// commands that drive the model runner directly).
absl::StatusOr<worker::KvStorage> MakeLocalCache(
    const LocalEngineOptions& options, const worker::ModelRunner& runner,
    kernels::Backend* backend);

}  // namespace latentkv::cli

#endif  // LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_
