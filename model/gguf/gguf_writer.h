// Writes GGUF v3 files: metadata and tensors, in the order added. Used by
// tests (hand-built and corrupt files, a small model re-encoded as llama.cpp
// stores it) and by tools; the serving path only reads GGUF.
//
// Not thread-safe. Tensor bytes are copied; Write lays them out at
// `alignment` (default 32, written as general.alignment only when changed).
#ifndef LATENTKV_MODEL_GGUF_GGUF_WRITER_H_
#define LATENTKV_MODEL_GGUF_GGUF_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/gguf/gguf_file.h"

namespace latentkv::model {

class GgufWriter {
 public:
  void SetString(const std::string& key, const std::string& value);
  void SetUint32(const std::string& key, uint32_t value);
  void SetInt32(const std::string& key, int32_t value);
  void SetFloat32(const std::string& key, float value);
  void SetBool(const std::string& key, bool value);
  void SetStringArray(const std::string& key,
                      const std::vector<std::string>& values);
  void SetInt32Array(const std::string& key,
                     const std::vector<int32_t>& values);
  void SetFloat32Array(const std::string& key,
                       const std::vector<float>& values);
  // A raw entry of `type` with `payload` as the value's encoded bytes (for
  // corrupt-file tests).
  void SetRaw(const std::string& key, uint32_t type,
              const std::vector<uint8_t>& payload);
  void SetAlignment(uint32_t alignment);

  // `dims` innermost first (a [rows, cols] matrix is {cols, rows}); `data`
  // must hold exactly the type's bytes for those dims.
  absl::Status AddTensor(const std::string& name,
                         const std::vector<int64_t>& dims, GgmlType type,
                         const void* data, size_t nbytes);

  // Serialised file bytes.
  std::vector<uint8_t> Serialize() const;
  absl::Status Write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    uint32_t type;
    std::vector<uint8_t> data;
  };
  std::vector<uint8_t> kv_;  // encoded metadata entries
  uint64_t n_kv_ = 0;
  uint32_t alignment_ = 32;
  std::vector<Tensor> tensors_;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_GGUF_GGUF_WRITER_H_
