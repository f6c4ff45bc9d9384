// POST /v1/embeddings in OpenAI's shape:
//   {"model"?, "input": string | [string] | [ids] | [[ids]],
//    "encoding_format"?: "float" (default) | "base64",
//    "dimensions"?: the model's hidden size (nothing else: no truncation),
//    "user"?: accepted, ignored}
//   -> {"object": "list", "data": [{"object": "embedding", "index",
//       "embedding": [floats] or base64 of little-endian float32}],
//       "model", "usage": {"prompt_tokens", "total_tokens"}}
// At most kMaxEmbeddingInputs inputs, none empty. An embedding is
// latentkv.v1.Generation.Embed's: the mean of the model's final normed
// hidden states over the input's tokens, at unit L2 norm (a generative
// model's representation, not a trained embedding model's).
// Parsing and JSON only (http_server_embeddings.cc serves it).
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_EMBEDDINGS_API_H_
#define LATENTKV_COORDINATOR_HTTP_EMBEDDINGS_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/http/openai_api.h"

namespace latentkv::coordinator::http {

inline constexpr int kMaxEmbeddingInputs = 256;

struct EmbeddingsBody {
  std::string model;  // empty when absent
  std::vector<PromptInput> inputs;
  bool base64 = false;
  std::optional<int64_t> dimensions;
};
std::optional<ApiError> ParseEmbeddingsBody(std::string_view body,
                                            EmbeddingsBody* out);

// The response for `vectors` (one per input, in order).
std::string EmbeddingsJson(const std::string& model,
                           const std::vector<std::vector<float>>& vectors,
                           int64_t prompt_tokens, bool base64);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_EMBEDDINGS_API_H_
