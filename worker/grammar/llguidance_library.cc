#include "worker/grammar/llguidance_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace latentkv::worker {
namespace {

namespace fs = std::filesystem;

constexpr char kLibName[] = "libllguidance.so";
constexpr char kStubName[] = "liblatentkv_pystub.so";

absl::Status DlError(const std::string& what) {
  const char* e = dlerror();
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": ", e != nullptr ? e : "unknown dlopen error"));
}

template <typename F>
absl::Status Resolve(void* handle, const char* name, F* out) {
  void* sym = dlsym(handle, name);
  if (sym == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("llguidance library lacks ", name));
  }
  *out = reinterpret_cast<F>(sym);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const LlguidanceLibrary>>
LlguidanceLibrary::Load(const std::string& dir) {
  const fs::path lib = fs::path(dir) / kLibName;
  const fs::path stub = fs::path(dir) / kStubName;
  for (const fs::path& p : {stub, lib}) {
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) {
      return absl::NotFoundError(absl::StrCat("no ", p.string()));
    }
  }
  // dlopen/dlerror are not reentrant per thread pair; serialise loads.
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  // The stub's symbols must be global for the library's BIND_NOW
  // relocations; both stay loaded for the process (Rust thread-locals and
  // dlclose do not mix).
  if (dlopen(stub.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE) == nullptr) {
    return DlError(absl::StrCat("loading ", stub.string()));
  }
  void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (h == nullptr) return DlError(absl::StrCat("loading ", lib.string()));
  std::shared_ptr<LlguidanceLibrary> l(new LlguidanceLibrary());
  llg::Api& a = l->api_;
  for (absl::Status s : {
           Resolve(h, "llg_get_version", &a.get_version),
           Resolve(h, "llg_new_tokenizer_v2", &a.new_tokenizer_v2),
           Resolve(h, "llg_free_tokenizer", &a.free_tokenizer),
           Resolve(h, "llg_constraint_init_set_defaults",
                   &a.constraint_init_set_defaults),
           Resolve(h, "llg_new_matcher", &a.new_matcher),
           Resolve(h, "llg_matcher_get_error", &a.matcher_get_error),
           Resolve(h, "llg_matcher_is_error", &a.matcher_is_error),
           Resolve(h, "llg_matcher_compute_mask_into",
                   &a.matcher_compute_mask_into),
           Resolve(h, "llg_matcher_get_mask_byte_size",
                   &a.matcher_get_mask_byte_size),
           Resolve(h, "llg_matcher_consume_token", &a.matcher_consume_token),
           Resolve(h, "llg_matcher_is_accepting", &a.matcher_is_accepting),
           Resolve(h, "llg_matcher_validate_tokens",
                   &a.matcher_validate_tokens),
           Resolve(h, "llg_matcher_is_stopped", &a.matcher_is_stopped),
           Resolve(h, "llg_free_matcher", &a.free_matcher),
       }) {
    if (!s.ok()) return s;
  }
  // "llguidance@1.8.0 derivre@... toktrie@..."
  const char* v = a.get_version();
  l->version_ = v != nullptr ? v : "";
  if (!absl::StrContains(l->version_, absl::StrCat("llguidance@", kVersion))) {
    return absl::FailedPreconditionError(
        absl::StrCat(lib.string(), " is \"", l->version_, "\"; latentkv needs ",
                     "llguidance@", kVersion));
  }
  l->dir_ = dir;
  return std::shared_ptr<const LlguidanceLibrary>(std::move(l));
}

std::vector<std::string> LlguidanceLibrary::DefaultDirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("LATENTKV_LLGUIDANCE_DIR");
      env != nullptr && *env != '\0') {
    dirs.push_back(env);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back(
        (exe.parent_path().parent_path() / "lib" / "latentkv").string());
  }
#ifdef LATENTKV_LLGUIDANCE_BUILD_DIR
  dirs.push_back(LATENTKV_LLGUIDANCE_BUILD_DIR);
#endif
  return dirs;
}

absl::StatusOr<std::shared_ptr<const LlguidanceLibrary>>
LlguidanceLibrary::LoadDefault() {
  const std::vector<std::string> dirs = DefaultDirs();
  for (const std::string& d : dirs) {
    std::error_code ec;
    if (fs::is_regular_file(fs::path(d) / kLibName, ec)) return Load(d);
  }
  return absl::NotFoundError(absl::StrCat(
      "llguidance (structured output) not found in: ",
      absl::StrJoin(dirs, ", "), " (tools/fetch_llguidance.sh fetches it)"));
}

}  // namespace latentkv::worker
