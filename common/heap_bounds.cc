// Bounds on glibc malloc's retained memory (heap_bounds.h).
#include "common/heap_bounds.h"

#include <malloc.h>

namespace latentkv {

bool BoundHeapGrowth(const HeapBoundsOptions& options) {
  bool ok = mallopt(M_MMAP_THRESHOLD, options.mmap_threshold_bytes) == 1;
  ok = mallopt(M_ARENA_MAX, options.max_arenas) == 1 && ok;
  return ok;
}

}  // namespace latentkv
