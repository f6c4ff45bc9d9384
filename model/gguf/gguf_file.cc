#include "model/gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/gguf/ggml_quants.h"

namespace latentkv::model {

// A metadata value: scalars keep their widest form; arrays keep their
// element type and the elements as scalars (nested arrays are rejected: no
// model uses them).
struct GgufFile::Value {
  GgufType type = GgufType::kUint8;
  GgufType elem_type = GgufType::kUint8;  // arrays only
  std::variant<uint64_t, int64_t, double, bool, std::string> scalar;
  std::vector<std::variant<uint64_t, int64_t, double, bool, std::string>> elems;
};

namespace {

constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxCount = 1ull << 32;
constexpr int kMaxDims = 4;

// The fewest bytes a tensor info takes: an empty name (its 8-byte length),
// n_dims, one dimension, the type and the offset.
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

using Scalar = std::variant<uint64_t, int64_t, double, bool, std::string>;

// The fewest bytes one array element of type `t` takes in the file (a
// string: its 8-byte length).
uint64_t MinElementBytes(GgufType t) {
  switch (t) {
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:
      return 8;
    default:
      return 1;
  }
}

// Bounds-checked little-endian reads from the mapping.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  template <typename T>
  absl::StatusOr<T> Read() {
    if (n_ - pos_ < sizeof(T)) return Truncated();
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  absl::StatusOr<std::string> ReadString() {
    auto len = Read<uint64_t>();
    if (!len.ok()) return len.status();
    if (*len > kMaxStringBytes || n_ - pos_ < *len) return Truncated();
    std::string s(reinterpret_cast<const char*>(p_ + pos_), *len);
    pos_ += *len;
    return s;
  }

 private:
  absl::Status Truncated() const {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated GGUF header at byte ", pos_));
  }
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

absl::StatusOr<Scalar> ReadScalar(Cursor& c, GgufType t) {
  switch (t) {
#define LK_GGUF_INT(kind, T, W)        \
  case GgufType::kind: {               \
    auto v = c.Read<T>();              \
    if (!v.ok()) return v.status();    \
    return Scalar(static_cast<W>(*v)); \
  }
    LK_GGUF_INT(kUint8, uint8_t, uint64_t)
    LK_GGUF_INT(kUint16, uint16_t, uint64_t)
    LK_GGUF_INT(kUint32, uint32_t, uint64_t)
    LK_GGUF_INT(kUint64, uint64_t, uint64_t)
    LK_GGUF_INT(kInt8, int8_t, int64_t)
    LK_GGUF_INT(kInt16, int16_t, int64_t)
    LK_GGUF_INT(kInt32, int32_t, int64_t)
    LK_GGUF_INT(kInt64, int64_t, int64_t)
    LK_GGUF_INT(kFloat32, float, double)
    LK_GGUF_INT(kFloat64, double, double)
#undef LK_GGUF_INT
    case GgufType::kBool: {
      auto v = c.Read<uint8_t>();
      if (!v.ok()) return v.status();
      return Scalar(*v != 0);
    }
    case GgufType::kString: {
      auto s = c.ReadString();
      if (!s.ok()) return s.status();
      return Scalar(std::move(*s));
    }
    case GgufType::kArray:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported GGUF value type ", static_cast<uint32_t>(t)));
}

bool ValidType(uint32_t t) { return t <= 12; }

std::string TypeName(GgufType t) {
  static const char* const kNames[] = {
      "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
      "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const uint32_t i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : absl::StrCat("type ", i);
}

absl::StatusOr<int64_t> AsInt(const Scalar& s) {
  if (const auto* u = std::get_if<uint64_t>(&s)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::OutOfRangeError("integer does not fit int64");
    }
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&s)) return *i;
  if (const auto* b = std::get_if<bool>(&s)) return *b ? 1 : 0;
  return absl::InvalidArgumentError("not an integer");
}

absl::StatusOr<double> AsFloat(const Scalar& s) {
  if (const auto* d = std::get_if<double>(&s)) return *d;
  if (std::holds_alternative<uint64_t>(s) ||
      std::holds_alternative<int64_t>(s)) {
    auto i = AsInt(s);
    if (!i.ok()) return i.status();
    return static_cast<double>(*i);
  }
  return absl::InvalidArgumentError("not a number");
}

}  // namespace

std::string GgmlTypeName(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kQ4_0:
      return "q4_0";
    case GgmlType::kQ4_1:
      return "q4_1";
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kBF16:
      return "bf16";
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return GgmlQuantLayoutOf(type)->name;
  }
  return absl::StrCat("ggml_type_", type);
}

std::vector<std::string> GgufFilesIn(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return found;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec) && e.path().extension() == ".gguf") {
      found.push_back(e.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::optional<DType> GgmlToDType(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ4_1:
      return DType::kQ4_1;
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return GgmlQuantLayoutOf(type)->dtype;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> GgufFile::TypeBytes(uint32_t type, int64_t n) {
  const std::optional<DType> d = GgmlToDType(type);
  if (!d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported tensor type ", GgmlTypeName(type),
        " (supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, "
        "q3_K, q4_K, q5_K, q6_K)"));
  }
  const int block = DTypeBlockElems(*d);
  if (n < 0 || n % block != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " elements are not whole ", GgmlTypeName(type),
                     " blocks of ", block));
  }
  return static_cast<uint64_t>(DTypeRowBytes(*d, n));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  auto errno_status = [&](const char* what) {
    const std::string msg =
        absl::StrCat(what, " ", path, ": ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(msg)
                           : absl::InvalidArgumentError(msg);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status("cannot open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return errno_status("cannot stat");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": too short for a GGUF file (", size, " bytes)"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return errno_status("cannot mmap");

  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->map_ = static_cast<const uint8_t*>(map);
  f->map_size_ = size;
  auto fail = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };

  Cursor c(f->map_, size);
  if (std::memcmp(f->map_, "GGUF", 4) != 0) {
    return fail(absl::InvalidArgumentError("not a GGUF file (bad magic)"));
  }
  (void)c.Read<uint32_t>();
  auto version = c.Read<uint32_t>();
  if (!version.ok()) return fail(version.status());
  if (*version != 2 && *version != 3) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "unsupported GGUF version ", *version, " (supported: 2, 3)")));
  }
  f->version_ = *version;
  auto n_tensors = c.Read<uint64_t>();
  if (!n_tensors.ok()) return fail(n_tensors.status());
  auto n_kv = c.Read<uint64_t>();
  if (!n_kv.ok()) return fail(n_kv.status());
  if (*n_tensors > kMaxCount || *n_kv > kMaxCount) {
    return fail(absl::InvalidArgumentError("implausible tensor/key count"));
  }

  for (uint64_t i = 0; i < *n_kv; ++i) {
    auto key = c.ReadString();
    if (!key.ok()) return fail(key.status());
    auto type = c.Read<uint32_t>();
    if (!type.ok()) return fail(type.status());
    if (!ValidType(*type)) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat(*key, ": unknown metadata type ", *type)));
    }
    auto v = std::make_unique<Value>();
    v->type = static_cast<GgufType>(*type);
    if (v->type == GgufType::kArray) {
      auto et = c.Read<uint32_t>();
      if (!et.ok()) return fail(et.status());
      auto count = c.Read<uint64_t>();
      if (!count.ok()) return fail(count.status());
      if (!ValidType(*et) || static_cast<GgufType>(*et) == GgufType::kArray) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat(*key, ": unsupported array element type ", *et)));
      }
      v->elem_type = static_cast<GgufType>(*et);
      // Bounded by what the rest of the file can hold, before reserving.
      if (*count > (size - c.pos()) / MinElementBytes(v->elem_type)) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat(*key, ": array of ", *count, " elements")));
      }
      v->elems.reserve(*count);
      for (uint64_t j = 0; j < *count; ++j) {
        auto s = ReadScalar(c, v->elem_type);
        if (!s.ok()) return fail(s.status());
        v->elems.push_back(std::move(*s));
      }
    } else {
      auto s = ReadScalar(c, v->type);
      if (!s.ok()) return fail(s.status());
      v->scalar = std::move(*s);
    }
    if (f->values_.contains(*key)) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("duplicate metadata key ", *key)));
    }
    f->key_order_.push_back(*key);
    f->values_.emplace(std::move(*key), std::move(v));
  }

  uint64_t alignment = 32;
  if (f->Has("general.alignment")) {
    auto a = f->GetInt("general.alignment");
    if (!a.ok() || *a <= 0 || (*a & (*a - 1)) != 0) {
      return fail(absl::InvalidArgumentError(
          "general.alignment must be a positive power of two"));
    }
    alignment = static_cast<uint64_t>(*a);
  }

  // Bounded by what the rest of the file can hold, before reserving.
  if (*n_tensors > (size - c.pos()) / kMinTensorInfoBytes) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("truncated GGUF header: ", *n_tensors,
                     " tensor infos at byte ", c.pos(), " of ", size)));
  }
  f->tensors_.reserve(*n_tensors);
  for (uint64_t i = 0; i < *n_tensors; ++i) {
    GgufTensorInfo t;
    auto name = c.ReadString();
    if (!name.ok()) return fail(name.status());
    t.name = std::move(*name);
    auto nd = c.Read<uint32_t>();
    if (!nd.ok()) return fail(nd.status());
    if (*nd == 0 || *nd > kMaxDims) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat(t.name, ": ", *nd, " dimensions")));
    }
    // The element count is bounded as it grows (2^40), so it never
    // overflows (four dimensions of 2^40 each did; found by fuzz_gguf).
    constexpr uint64_t kMaxElements = uint64_t{1} << 40;
    uint64_t count = 1;
    for (uint32_t d = 0; d < *nd; ++d) {
      auto dim = c.Read<uint64_t>();
      if (!dim.ok()) return fail(dim.status());
      if (*dim == 0 || *dim > kMaxElements) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat(t.name, ": dimension ", *dim)));
      }
      if (*dim > kMaxElements / count) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat(t.name, ": implausible element count")));
      }
      count *= *dim;
      t.dims.push_back(static_cast<int64_t>(*dim));
    }
    auto type = c.Read<uint32_t>();
    if (!type.ok()) return fail(type.status());
    t.type = *type;
    auto off = c.Read<uint64_t>();
    if (!off.ok()) return fail(off.status());
    t.offset = *off;
    auto bytes = TypeBytes(t.type, t.numel());
    if (!bytes.ok()) {
      return fail(
          absl::Status(bytes.status().code(),
                       absl::StrCat(t.name, ": ", bytes.status().message())));
    }
    t.nbytes = *bytes;
    if (f->tensor_index_.contains(t.name)) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("duplicate tensor ", t.name)));
    }
    f->tensor_index_.emplace(t.name, f->tensors_.size());
    f->tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  for (GgufTensorInfo& t : f->tensors_) {
    if (t.offset % alignment != 0) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          t.name, ": data offset ", t.offset, " not aligned to ", alignment)));
    }
    if (data_start > size || t.offset > size - data_start ||
        t.nbytes > size - data_start - t.offset) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          t.name, ": data (", t.nbytes, " bytes at ", data_start + t.offset,
          ") runs past the end of the file (", size, " bytes)")));
    }
    t.data = f->map_ + data_start + t.offset;
  }
  // The tensors tile the data section: sorted by offset, each starts where
  // the previous one's bytes (by its type and dims) end, rounded up to the
  // alignment. A flipped type byte or dimension changes a tensor's size and
  // breaks the tiling (overlapping data, or a gap), instead of loading
  // another tensor's bytes as weights.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : f->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
              return a->offset < b->offset;
            });
  uint64_t expected = 0;
  const GgufTensorInfo* prev = nullptr;
  for (const GgufTensorInfo* t : by_offset) {
    if (t->offset != expected) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          t->name, ": data at offset ", t->offset,
          prev == nullptr
              ? absl::StrCat(" but the data section starts at 0")
              : absl::StrCat(t->offset < expected ? " overlaps "
                                                  : " leaves a gap after ",
                             prev->name, " (", GgmlTypeName(prev->type), ", ",
                             prev->nbytes, " bytes at ", prev->offset,
                             "): a tensor's type or dimensions are corrupt"))));
    }
    expected = (t->offset + t->nbytes + alignment - 1) / alignment * alignment;
    prev = t;
  }
  return f;
}

GgufFile::~GgufFile() {
  if (map_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(map_), map_size_);
  }
}

namespace {
absl::string_view Absl(std::string_view s) { return {s.data(), s.size()}; }
}  // namespace

bool GgufFile::Has(std::string_view key) const {
  return values_.contains(Absl(key));
}

absl::StatusOr<const GgufFile::Value*> GgufFile::Find(
    std::string_view key) const {
  auto it = values_.find(Absl(key));
  if (it == values_.end()) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": missing metadata key ", Absl(key)));
  }
  return it->second.get();
}

namespace {
absl::Status WrongType(const std::string& path, std::string_view key,
                       std::string_view want, GgufType got) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": metadata key ", Absl(key), " is ", TypeName(got),
                   ", expected ", Absl(want)));
}
}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  if ((*v)->type != GgufType::kString) {
    return WrongType(path_, key, "string", (*v)->type);
  }
  return std::get<std::string>((*v)->scalar);
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  auto i = (*v)->type == GgufType::kArray || (*v)->type == GgufType::kFloat32 ||
                   (*v)->type == GgufType::kFloat64
               ? absl::StatusOr<int64_t>(absl::InvalidArgumentError(""))
               : AsInt((*v)->scalar);
  if (!i.ok()) return WrongType(path_, key, "an integer", (*v)->type);
  return *i;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  if ((*v)->type == GgufType::kArray || (*v)->type == GgufType::kBool) {
    return WrongType(path_, key, "a number", (*v)->type);
  }
  auto d = AsFloat((*v)->scalar);
  if (!d.ok()) return WrongType(path_, key, "a number", (*v)->type);
  return *d;
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  if ((*v)->type != GgufType::kBool) {
    return WrongType(path_, key, "bool", (*v)->type);
  }
  return std::get<bool>((*v)->scalar);
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(
    std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  if ((*v)->type != GgufType::kArray || (*v)->elem_type != GgufType::kString) {
    return WrongType(path_, key, "array of string", (*v)->type);
  }
  std::vector<std::string> out;
  out.reserve((*v)->elems.size());
  for (const Scalar& s : (*v)->elems) out.push_back(std::get<std::string>(s));
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(
    std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  const GgufType et = (*v)->elem_type;
  if ((*v)->type != GgufType::kArray || et == GgufType::kString ||
      et == GgufType::kFloat32 || et == GgufType::kFloat64) {
    return WrongType(path_, key, "array of integer", (*v)->type);
  }
  std::vector<int64_t> out;
  out.reserve((*v)->elems.size());
  for (const Scalar& s : (*v)->elems) {
    auto i = AsInt(s);
    if (!i.ok()) return WrongType(path_, key, "array of integer", et);
    out.push_back(*i);
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufFile::GetFloatArray(
    std::string_view key) const {
  auto v = Find(key);
  if (!v.ok()) return v.status();
  const GgufType et = (*v)->elem_type;
  if ((*v)->type != GgufType::kArray || et == GgufType::kString ||
      et == GgufType::kBool) {
    return WrongType(path_, key, "array of number", (*v)->type);
  }
  std::vector<double> out;
  out.reserve((*v)->elems.size());
  for (const Scalar& s : (*v)->elems) {
    auto d = AsFloat(s);
    if (!d.ok()) return WrongType(path_, key, "array of number", et);
    out.push_back(*d);
  }
  return out;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(Absl(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace latentkv::model
