// Loading a model in-process for the CLI's local commands.
#ifndef LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_
#define LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {

struct LocalModel {
  std::shared_ptr<const model::ModelWeights> weights;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<kernels::Backend> backend;
};

absl::StatusOr<LocalModel> LoadLocalModel(const LocalEngineOptions& options);

}  // namespace latentkv::cli

#endif  // LATENTKV_TOOLS_CLI_LOCAL_ENGINE_H_
