// Where tools/fetch_models.sh puts the models it fetches from PyPI (pinned,
// hash-checked): $LATENTKV_MODEL_CACHE when set and non-empty, else
// $HOME/.cache/latentkv/models. Tests of fetched models look there and skip,
// saying so, when a file is absent.
// Thread-safety: reads the environment; call it before starting threads
// that change it.
#ifndef LATENTKV_COMMON_FETCHED_MODELS_H_
#define LATENTKV_COMMON_FETCHED_MODELS_H_

#include <cstdlib>
#include <string>

namespace latentkv {

// The Gemma-3-270M Q4_K_M GGUF of tools/fetch_models.sh.
inline constexpr char kGemma3_270mFile[] = "gemma-3-270m-q4_k_m.gguf";

// The cache path of `file` (which may not exist).
inline std::string FetchedModelPath(const std::string& file) {
  const char* cache = std::getenv("LATENTKV_MODEL_CACHE");
  if (cache != nullptr && *cache != '\0')
    return std::string(cache) + "/" + file;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.cache/latentkv/models/" +
         file;
}

}  // namespace latentkv

#endif  // LATENTKV_COMMON_FETCHED_MODELS_H_
