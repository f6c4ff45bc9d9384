#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference impl.

std::optional<DType> ParseStDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return std::nullopt;
}

const char* StDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    default:  // block-quantized and fp8: no safetensors dtype here
      break;
  }
  return "?";
}

// numel * elem_size with overflow detection; nullopt on overflow or a
// negative dimension.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape,
                                 int elem_size) {
  uint64_t n = static_cast<uint64_t>(elem_size);
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 &&
        n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
      return std::nullopt;
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
}

absl::Status WriteAll(int fd, const void* data, size_t n, uint64_t offset,
                      const std::string& path) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, 1u << 30),
                         static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = Errno("cannot stat", path);
    ::close(fd);
    return s;
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file of ", file_size,
                     " bytes is too short for a safetensors header"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return Errno("cannot mmap", path);
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->map_ = map;
  f->map_size_ = file_size;
  const uint8_t* base = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > file_size - 8 || header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_len, " exceeds the file size ",
        file_size, " (or the ", kMaxHeaderBytes, "-byte limit)"));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  json header;
  try {
    header = json::parse(base + 8, base + data_start);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid JSON header: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header is not a JSON object"));
  }

  std::vector<std::pair<uint64_t, uint64_t>> spans;  // for the overlap check
  std::vector<std::string> span_names;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": __metadata__ is not an object"));
        }
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) {
            return absl::InvalidArgumentError(
                absl::StrCat(path, ": __metadata__ value of \"", m.key(),
                             "\" is not a string"));
          }
          f->metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      auto bad = [&](const std::string& what) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor ", name, ": ", what));
      };
      if (!v.is_object()) return bad("entry is not an object");
      auto dt = v.find("dtype");
      auto sh = v.find("shape");
      auto off = v.find("data_offsets");
      if (dt == v.end() || !dt->is_string()) return bad("missing dtype");
      if (sh == v.end() || !sh->is_array()) return bad("missing shape");
      if (off == v.end() || !off->is_array() || off->size() != 2) {
        return bad("data_offsets must be a list of two integers");
      }
      TensorEntry e;
      e.name = name;
      std::string dts = dt->get<std::string>();
      std::optional<DType> dtype = ParseStDType(dts);
      if (!dtype) {
        return bad(absl::StrCat("unsupported dtype ", dts,
                                " (supported: F32, F16, BF16)"));
      }
      e.dtype = *dtype;
      for (const json& d : *sh) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) {
          return bad(absl::StrCat("bad shape ", sh->dump()));
        }
        e.shape.push_back(d.get<int64_t>());
      }
      for (const json& o : *off) {
        if (!o.is_number_unsigned()) {
          return bad(absl::StrCat("bad data_offsets ", off->dump()));
        }
      }
      uint64_t begin = (*off)[0].get<uint64_t>();
      uint64_t end = (*off)[1].get<uint64_t>();
      if (begin > end || end > data_size) {
        return bad(absl::StrCat("data_offsets [", begin, ", ", end,
                                "] outside the data section of ", data_size,
                                " bytes"));
      }
      std::optional<uint64_t> nbytes = ByteSize(e.shape, DTypeSize(e.dtype));
      if (!nbytes || *nbytes != end - begin) {
        return bad(absl::StrCat("shape ", sh->dump(), " of ", dts, " needs ",
                                nbytes ? absl::StrCat(*nbytes) : "too many",
                                " bytes, data_offsets span ", end - begin));
      }
      e.data = base + data_start + begin;
      e.nbytes = static_cast<size_t>(end - begin);
      if (end > begin) {
        spans.emplace_back(begin, end);
        span_names.push_back(name);
      }
      f->tensors_.emplace(name, std::move(e));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": malformed header: ", e.what()));
  }
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return spans[a] < spans[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = spans[order[i - 1]];
    const auto& cur = spans[order[i]];
    if (cur.first < prev.second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", span_names[order[i]],
                       " overlaps tensor ", span_names[order[i - 1]]));
    }
  }
  return f;
}

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------
// SafetensorsStreamWriter

void SafetensorsStreamWriter::Declare(const std::string& name, DType dtype,
                                      std::vector<int64_t> shape) {
  Entry e;
  e.dtype = dtype;
  e.shape = std::move(shape);
  entries_[name] = std::move(e);
}

void SafetensorsStreamWriter::SetMetadata(const std::string& key,
                                          const std::string& value) {
  metadata_[key] = value;
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status SafetensorsStreamWriter::Open(const std::string& path) {
  if (fd_ >= 0) return absl::FailedPreconditionError("already open");
  path_ = path;
  // Data order: larger elements first (keeps every tensor naturally aligned
  // with contiguous data), then by name.
  std::vector<std::string> names;
  for (const auto& [name, e] : entries_) {
    if (name == "__metadata__") {
      return absl::InvalidArgumentError("tensor name __metadata__ is reserved");
    }
    std::optional<uint64_t> n = ByteSize(e.shape, DTypeSize(e.dtype));
    if (!n) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, ": bad shape"));
    }
    names.push_back(name);
  }
  std::stable_sort(names.begin(), names.end(),
                   [&](const std::string& a, const std::string& b) {
                     return DTypeSize(entries_[a].dtype) >
                            DTypeSize(entries_[b].dtype);
                   });
  json header = json::object();
  if (!metadata_.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const std::string& name : names) {
    Entry& e = entries_[name];
    e.nbytes = *ByteSize(e.shape, DTypeSize(e.dtype));
    e.offset = offset;
    offset += e.nbytes;
    header[name] = {{"dtype", StDTypeName(e.dtype)},
                    {"shape", e.shape},
                    {"data_offsets", {e.offset, e.offset + e.nbytes}}};
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  data_start_ = 8 + text.size();
  total_size_ = data_start_ + offset;

  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return Errno("cannot create", path);
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  absl::Status s = WriteAll(fd_, len, 8, 0, path);
  if (s.ok()) s = WriteAll(fd_, text.data(), text.size(), 8, path);
  if (s.ok() && ::ftruncate(fd_, static_cast<off_t>(total_size_)) != 0) {
    s = Errno("cannot resize", path);
  }
  return s;
}

absl::Status SafetensorsStreamWriter::Write(const std::string& name,
                                            const void* data) {
  if (fd_ < 0) return absl::FailedPreconditionError("writer is not open");
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " was not declared"));
  }
  if (it->second.written) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " written twice"));
  }
  absl::Status s = WriteAll(fd_, data, it->second.nbytes,
                            data_start_ + it->second.offset, path_);
  if (s.ok()) it->second.written = true;
  return s;
}

absl::Status SafetensorsStreamWriter::WriteF32(const std::string& name,
                                               const float* data) {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " was not declared"));
  }
  if (it->second.dtype == DType::kF32) return Write(name, data);
  int64_t n = 1;
  for (int64_t d : it->second.shape) n *= d;
  std::vector<uint8_t> buf(static_cast<size_t>(n) *
                           DTypeSize(it->second.dtype));
  ConvertFromF32(data, n, it->second.dtype, buf.data());
  return Write(name, buf.data());
}

absl::Status SafetensorsStreamWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError("writer is not open");
  for (const auto& [name, e] : entries_) {
    if (!e.written) {
      ::close(fd_);
      fd_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": tensor ", name, " was never written"));
    }
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return Errno("cannot close", path_);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// SafetensorsWriter

void SafetensorsWriter::Add(const std::string& name, DType dtype,
                            std::vector<int64_t> shape, const void* data) {
  Pending p;
  p.dtype = dtype;
  p.shape = std::move(shape);
  uint64_t n = ByteSize(p.shape, DTypeSize(dtype)).value_or(0);
  const uint8_t* b = static_cast<const uint8_t*>(data);
  p.bytes.assign(b, b + n);
  tensors_[name] = std::move(p);
}

void SafetensorsWriter::AddF32(const std::string& name, DType dtype,
                               std::vector<int64_t> shape, const float* data) {
  Pending p;
  p.dtype = dtype;
  p.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : p.shape) n *= d;
  p.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  ConvertFromF32(data, n, dtype, p.bytes.data());
  tensors_[name] = std::move(p);
}

void SafetensorsWriter::SetMetadata(const std::string& key,
                                    const std::string& value) {
  metadata_[key] = value;
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  SafetensorsStreamWriter w;
  for (const auto& [k, v] : metadata_) w.SetMetadata(k, v);
  for (const auto& [name, p] : tensors_) w.Declare(name, p.dtype, p.shape);
  absl::Status s = w.Open(path);
  for (const auto& [name, p] : tensors_) {
    if (!s.ok()) break;
    s = w.Write(name, p.bytes.data());
  }
  if (s.ok()) s = w.Finish();
  return s;
}

}  // namespace latentkv::model
