#include "worker/comm/rendezvous_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace latentkv::comm {
namespace {

void AppendEscaped(absl::string_view s, std::string* out) {
  for (const char c : s) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
        c == '-') {
      out->push_back(c);
    } else {
      absl::StrAppendFormat(out, "%%%02X", static_cast<unsigned char>(c));
    }
  }
}

absl::Status Errno(int error, absl::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(error, absl::StrCat(what, " '", path, "'"));
}

// Writes all of `data` to `fd`, retrying short writes and EINTR.
bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads exactly `size` bytes from `fd` into `out`; false with errno set on an
// error, false with errno 0 when the file ends early.
bool ReadAll(int fd, size_t size, std::string* out) {
  out->resize(size);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = read(fd, out->data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {
      errno = 0;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string RendezvousPath(absl::string_view dir, absl::string_view prefix,
                           absl::string_view key) {
  std::string path = absl::StrCat(dir, "/latentkv.");
  AppendEscaped(prefix, &path);
  path.push_back('.');
  AppendEscaped(key, &path);
  return path;
}

absl::Status PublishBlob(const std::string& path, absl::string_view blob) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rendezvous file '", path,
        "' already exists: left over from an earlier group with the same "
        "dir and prefix; remove it or use a fresh prefix"));
  }
  std::string tmp = absl::StrCat(path, ".tmp.XXXXXX");
  const int fd = mkstemp(tmp.data());
  if (fd < 0) return Errno(errno, "creating rendezvous temp file", tmp);
  bool ok = fchmod(fd, 0644) == 0 && WriteAll(fd, blob) && fsync(fd) == 0;
  int error = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (ok && rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    error = errno;
  }
  if (!ok) {
    unlink(tmp.c_str());
    return Errno(error, "publishing rendezvous file", path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadBlob(const std::string& path, size_t size,
                                     absl::Time deadline,
                                     const PollOptions& poll) {
  std::string blob;
  absl::Status s = PollUntil(
      deadline, poll,
      absl::StrCat("waiting for rendezvous file '", path,
                   "' (the publishing rank did not show up)"),
      [&]() -> absl::StatusOr<bool> {
        const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          if (errno == ENOENT) return false;
          return Errno(errno, "opening rendezvous file", path);
        }
        struct stat st;
        absl::Status result;
        if (fstat(fd, &st) != 0) {
          result = Errno(errno, "reading rendezvous file", path);
        } else if (!S_ISREG(st.st_mode) ||
                   static_cast<uint64_t>(st.st_size) != size) {
          result = absl::FailedPreconditionError(absl::StrCat(
              "rendezvous file '", path, "' holds ", st.st_size,
              " bytes, expected ", size,
              ": not written for this group (remove it or use a fresh "
              "prefix)"));
        } else if (!ReadAll(fd, size, &blob)) {
          result = errno != 0 ? Errno(errno, "reading rendezvous file", path)
                              : absl::DataLossError(
                                    absl::StrCat("rendezvous file '", path,
                                                 "' shrank while being read"));
        }
        close(fd);
        if (!result.ok()) return result;
        return true;
      });
  if (!s.ok()) return s;
  return blob;
}

absl::Status RemoveBlob(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Errno(errno, "removing rendezvous file", path);
  }
  return absl::OkStatus();
}

}  // namespace latentkv::comm
