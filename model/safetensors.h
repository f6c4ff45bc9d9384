// Reading and writing the safetensors format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the data.
//
// SafetensorsFile memory-maps the file read-only; tensor data pointers stay
// valid for the object's lifetime. Open() validates the whole header (JSON,
// dtypes, offsets inside the file and matching shape * dtype size, no
// overlaps) and errors name the offending tensor.
#ifndef LATENTKV_MODEL_SAFETENSORS_H_
#define LATENTKV_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace latentkv::model {

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;  // F32, F16, BF16 supported
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // nullptr when absent.
  const TensorEntry* Find(const std::string& name) const;
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }

 private:
  SafetensorsFile() = default;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Builds a safetensors file in memory and writes it (header keys sorted by
// name, header padded to 8 bytes, contiguous data ordered by element size then
// name, so every tensor is naturally aligned).
class SafetensorsWriter {
 public:
  // `data` holds numel(shape) * DTypeSize(dtype) bytes; copied.
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
           const void* data);
  // Converts f32 values to `dtype` before storing.
  void AddF32(const std::string& name, DType dtype, std::vector<int64_t> shape,
              const float* data);
  void SetMetadata(const std::string& key, const std::string& value);
  absl::Status Write(const std::string& path) const;

 private:
  struct Pending {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file tensor by tensor without holding the whole model
// in memory: Declare() every tensor, Open() (writes the header and sizes the
// file), then Write()/WriteF32() each declared tensor in any order, then
// Finish() (fails if one was never written). Data is contiguous, larger
// element types first, then by name, so every tensor is naturally aligned.
class SafetensorsStreamWriter {
 public:
  SafetensorsStreamWriter() = default;
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  void Declare(const std::string& name, DType dtype,
               std::vector<int64_t> shape);
  void SetMetadata(const std::string& key, const std::string& value);
  absl::Status Open(const std::string& path);
  // `data` holds the declared tensor's bytes in its declared dtype.
  absl::Status Write(const std::string& name, const void* data);
  // `data` holds the declared tensor's values as f32; converted on the fly.
  absl::Status WriteF32(const std::string& name, const float* data);
  absl::Status Finish();

 private:
  struct Entry {
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    uint64_t offset = 0;
    uint64_t nbytes = 0;
    bool written = false;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  uint64_t total_size_ = 0;
};

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_SAFETENSORS_H_
