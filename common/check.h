// LATENTKV_CHECK(cond, message parts...): ends the process with the file,
// line, condition and message when `cond` is false. For programming errors
// (broken invariants), never for bad input, which gets an absl::Status.
// Abseil 20220623 has no absl/log CHECK.
#ifndef LATENTKV_COMMON_CHECK_H_
#define LATENTKV_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace latentkv::internal {

[[noreturn]] inline void CheckFailed(const char* file, int line,
                                     const std::string& msg) {
  std::fprintf(stderr, "%s:%d: FATAL: %s\n", file, line, msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace latentkv::internal

#define LATENTKV_CHECK(cond, ...)                                  \
  do {                                                             \
    if (!(cond)) {                                                 \
      ::latentkv::internal::CheckFailed(                           \
          __FILE__, __LINE__,                                      \
          absl::StrCat("check failed: " #cond ": ", __VA_ARGS__)); \
    }                                                              \
  } while (false)

#endif  // LATENTKV_COMMON_CHECK_H_
