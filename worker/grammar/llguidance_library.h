// llguidance (structured-output token masks) loaded at run time.
//
// llguidance is a Rust library; its C ABI ships on PyPI inside the Python
// wheel `llguidance` (llguidance/_lib.abi3.so), which latentkv pins by
// version and sha256 (tools/llguidance-requirements.txt, fetched by
// tools/fetch_llguidance.sh when the build is configured). Why not build it:
// the crate needs Rust >= 1.87 and Debian 12 ships 1.63. Why a stub: the
// wheel's module entry point (PyInit__lib) refers to ~100 CPython API
// symbols and the file is linked with BIND_NOW, so the loader wants them
// resolved although the C ABI never calls them.
// liblatentkv_pystub.so (python_symbols_stub.c) defines them, each aborting
// with a message if it were ever called; no Python runtime is loaded.
//
// A directory holding both files (libllguidance.so, liblatentkv_pystub.so)
// is what Load takes; the build puts them in <build>/lib/latentkv.
// Thread-safety: a loaded library is immutable and never unloaded.
#ifndef LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_LIBRARY_H_
#define LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_LIBRARY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/grammar/llguidance_abi.h"

namespace latentkv::worker {

class LlguidanceLibrary {
 public:
  // The version this code's declarations match.
  static constexpr char kVersion[] = "1.8.0";

  // Loads dir/liblatentkv_pystub.so then dir/libllguidance.so and resolves
  // the functions of llg::Api. NotFound when a file is missing;
  // FailedPrecondition when it does not load, lacks a function or reports
  // another version than kVersion.
  static absl::StatusOr<std::shared_ptr<const LlguidanceLibrary>> Load(
      const std::string& dir);

  // Where to look, in order: $LATENTKV_LLGUIDANCE_DIR when set, then
  // <directory of this executable>/../lib/latentkv, then the build's own
  // directory (LATENTKV_LLGUIDANCE_BUILD_DIR).
  static std::vector<std::string> DefaultDirs();

  // Load of the first of DefaultDirs() that holds libllguidance.so; NotFound
  // (listing the places tried) when none does.
  static absl::StatusOr<std::shared_ptr<const LlguidanceLibrary>> LoadDefault();

  const llg::Api& api() const { return api_; }
  const std::string& version() const { return version_; }
  const std::string& dir() const { return dir_; }

 private:
  LlguidanceLibrary() = default;
  llg::Api api_{};
  std::string version_;
  std::string dir_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_GRAMMAR_LLGUIDANCE_LIBRARY_H_
