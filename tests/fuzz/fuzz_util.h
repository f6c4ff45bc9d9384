// Helpers shared by the libFuzzer targets (docs/FUZZING.md): the parsers
// that only open paths read each input from an in-memory file.
#ifndef LATENTKV_TESTS_FUZZ_FUZZ_UTIL_H_
#define LATENTKV_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace latentkv::fuzz {

// One memfd per process, rewritten with each input; path() opens it
// ("/proc/self/fd/N": open, mmap and ifstream all work on it).
class MemFile {
 public:
  MemFile();
  ~MemFile();
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  // Replaces the contents; aborts when the kernel refuses (not an input bug).
  void Write(const uint8_t* data, size_t size);
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A private directory (under $TMPDIR, else /dev/shm or /tmp) for parsers that
// read a whole model directory; removed when the process exits normally.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  // Writes `name` (a plain file name) inside; returns its path.
  std::string Write(const std::string& name, std::string_view bytes) const;
  // Removes everything inside (the directory stays).
  void Clear() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Reads a consumed-from-the-front view of the input: the first bytes pick
// options, the rest is the document.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  // The next byte (0 once exhausted).
  uint8_t Byte() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view Rest() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace latentkv::fuzz

#endif  // LATENTKV_TESTS_FUZZ_FUZZ_UTIL_H_
