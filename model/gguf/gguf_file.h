// A reader of GGUF files (llama.cpp's model container, versions 2 and 3):
// the header, every metadata key/value and the tensor directory, over a
// read-only memory mapping of the file. It knows nothing of models: callers
// (model/gguf_loader.h, the tokenizer) interpret the keys and tensors.
//
// Layout (little endian): "GGUF", uint32 version, uint64 tensor count,
// uint64 metadata count; metadata entries (string key, uint32 type, value);
// tensor infos (string name, uint32 n_dims, uint64 dims[n_dims] innermost
// first, uint32 ggml type, uint64 offset); padding to `general.alignment`
// (default 32); then the tensor data, each tensor at data_start + offset.
//
// Thread-safety: an opened GgufFile is immutable; every accessor may be
// called from many threads. Tensor data pointers stay valid while it lives.
#ifndef LATENTKV_MODEL_GGUF_GGUF_FILE_H_
#define LATENTKV_MODEL_GGUF_GGUF_FILE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace latentkv::model {

// GGUF metadata value types (gguf_type in llama.cpp).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// ggml tensor element types this project reads (ggml_type ids).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// "f32", "q4_0", "q4_K", ...; "ggml_type_<id>" for an id we do not read.
std::string GgmlTypeName(uint32_t type);
// The DType of a ggml type id we read (GgmlType: each is a latentkv dtype of
// the same layout); nullopt otherwise.
std::optional<DType> GgmlToDType(uint32_t type);

// The *.gguf files directly inside `dir`, sorted by name (none when `dir` is
// not a directory).
std::vector<std::string> GgufFilesIn(const std::string& dir);

struct GgufTensorInfo {
  std::string name;
  // Dimensions as GGUF stores them, innermost (contiguous) first: a matrix
  // with `rows` rows of `cols` elements is {cols, rows}.
  std::vector<int64_t> dims;
  uint32_t type = 0;              // a ggml_type id (GgmlType when supported)
  uint64_t offset = 0;            // from the start of the data section
  const uint8_t* data = nullptr;  // into the mapping
  uint64_t nbytes = 0;            // bytes of the tensor's data
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and parses `path`. Errors: NotFound (cannot open), InvalidArgument
  // (not GGUF, unsupported version, truncated header, a tensor whose data
  // runs past the end of the file, unknown metadata type, duplicate keys or
  // tensor names). Tensors of ggml types we cannot size are rejected at
  // Open only if their size is needed (it always is: InvalidArgument naming
  // the tensor and its type).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(
      const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }

  bool Has(std::string_view key) const;
  // Typed reads. NotFound when the key is absent; InvalidArgument when its
  // type does not fit: GetInt takes any integer type (and bool), GetFloat any
  // float or integer type, the array getters arrays of those element types.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(
      std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(std::string_view key) const;
  // Every metadata key, in file order.
  const std::vector<std::string>& keys() const { return key_order_; }

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensorInfo* FindTensor(std::string_view name) const;

  // Bytes of `n` elements of ggml type `type` (n a multiple of its block
  // size); InvalidArgument for a type we cannot size or a partial block.
  static absl::StatusOr<uint64_t> TypeBytes(uint32_t type, int64_t n);

 private:
  struct Value;
  GgufFile() = default;
  absl::StatusOr<const Value*> Find(std::string_view key) const;

  std::string path_;
  uint32_t version_ = 0;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<std::string> key_order_;
  absl::flat_hash_map<std::string, std::unique_ptr<Value>> values_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_GGUF_GGUF_FILE_H_
