// A thread-safe map from names to factories, for the things a binary picks
// by name at run time (compute backends, KV residency policies).
#ifndef LATENTKV_COMMON_NAMED_REGISTRY_H_
#define LATENTKV_COMMON_NAMED_REGISTRY_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace latentkv {

template <typename Factory>
class NamedRegistry {
 public:
  // Adds `name`, replacing an earlier factory of that name.
  void Register(std::string name, Factory factory) {
    absl::MutexLock lock(&mu_);
    factories_[std::move(name)] = std::move(factory);
  }
  // The factory registered as `name`, or an empty one.
  Factory Find(std::string_view name) const {
    absl::MutexLock lock(&mu_);
    auto it = factories_.find(std::string(name));
    return it == factories_.end() ? Factory() : it->second;
  }
  // The registered names, sorted.
  std::vector<std::string> Names() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> names;
    for (const auto& [name, f] : factories_) names.push_back(name);
    return names;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, Factory> factories_ ABSL_GUARDED_BY(mu_);
};

}  // namespace latentkv

#endif  // LATENTKV_COMMON_NAMED_REGISTRY_H_
