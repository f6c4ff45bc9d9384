#include "model/gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace latentkv::model {
namespace {

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void PutString(std::vector<uint8_t>& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void PutKey(std::vector<uint8_t>& out, const std::string& key, GgufType t) {
  PutString(out, key);
  Put<uint32_t>(out, static_cast<uint32_t>(t));
}

}  // namespace

void GgufWriter::SetString(const std::string& key, const std::string& value) {
  PutKey(kv_, key, GgufType::kString);
  PutString(kv_, value);
  ++n_kv_;
}

void GgufWriter::SetUint32(const std::string& key, uint32_t value) {
  PutKey(kv_, key, GgufType::kUint32);
  Put(kv_, value);
  ++n_kv_;
}

void GgufWriter::SetInt32(const std::string& key, int32_t value) {
  PutKey(kv_, key, GgufType::kInt32);
  Put(kv_, value);
  ++n_kv_;
}

void GgufWriter::SetFloat32(const std::string& key, float value) {
  PutKey(kv_, key, GgufType::kFloat32);
  Put(kv_, value);
  ++n_kv_;
}

void GgufWriter::SetBool(const std::string& key, bool value) {
  PutKey(kv_, key, GgufType::kBool);
  Put<uint8_t>(kv_, value ? 1 : 0);
  ++n_kv_;
}

void GgufWriter::SetStringArray(const std::string& key,
                                const std::vector<std::string>& values) {
  PutKey(kv_, key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kString));
  Put<uint64_t>(kv_, values.size());
  for (const std::string& s : values) PutString(kv_, s);
  ++n_kv_;
}

void GgufWriter::SetInt32Array(const std::string& key,
                               const std::vector<int32_t>& values) {
  PutKey(kv_, key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kInt32));
  Put<uint64_t>(kv_, values.size());
  for (int32_t v : values) Put(kv_, v);
  ++n_kv_;
}

void GgufWriter::SetFloat32Array(const std::string& key,
                                 const std::vector<float>& values) {
  PutKey(kv_, key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kFloat32));
  Put<uint64_t>(kv_, values.size());
  for (float v : values) Put(kv_, v);
  ++n_kv_;
}

void GgufWriter::SetRaw(const std::string& key, uint32_t type,
                        const std::vector<uint8_t>& payload) {
  PutString(kv_, key);
  Put<uint32_t>(kv_, type);
  kv_.insert(kv_.end(), payload.begin(), payload.end());
  ++n_kv_;
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  alignment_ = alignment;
  SetUint32("general.alignment", alignment);
}

absl::Status GgufWriter::AddTensor(const std::string& name,
                                   const std::vector<int64_t>& dims,
                                   GgmlType type, const void* data,
                                   size_t nbytes) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  auto want = GgufFile::TypeBytes(static_cast<uint32_t>(type), n);
  if (!want.ok()) return want.status();
  if (*want != nbytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", nbytes, " bytes given, ", *want, " expected"));
  }
  Tensor t{name, dims, static_cast<uint32_t>(type), {}};
  t.data.assign(static_cast<const uint8_t*>(data),
                static_cast<const uint8_t*>(data) + nbytes);
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, n_kv_);
  out.insert(out.end(), kv_.begin(), kv_.end());
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, t.type);
    offset = (offset + alignment_ - 1) / alignment_ * alignment_;
    offsets.push_back(offset);
    Put<uint64_t>(out, offset);
    offset += t.data.size();
  }
  const size_t data_start =
      (out.size() + alignment_ - 1) / alignment_ * alignment_;
  out.resize(data_start + offset, 0);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    std::memcpy(out.data() + data_start + offsets[i], tensors_[i].data.data(),
                tensors_[i].data.size());
  }
  return out;
}

absl::Status GgufWriter::Write(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool ok = std::fclose(f) == 0 && n == bytes.size();
  return ok ? absl::OkStatus()
            : absl::DataLossError(absl::StrCat("short write to ", path));
}

}  // namespace latentkv::model
