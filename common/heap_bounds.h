// Keeps a server's resident memory from ratcheting up under large requests.
// glibc's malloc raises its mmap threshold after each large free (up to
// 32 MiB), so later request bodies and KV payloads come from the heap
// arenas, one per thread, which keep the pages after free: a coordinator
// with 64 HTTP threads grew from 57 to 100 MB RSS under 1.9 MB bodies that
// it refused (tests/integration/soak_test.cc), and 1.3 GB under 50 MB ones
// before bodies were bounded. Fixing the threshold keeps every allocation
// of `mmap_threshold_bytes` or more in its own mapping, returned to the
// kernel on free; capping the arenas bounds what small allocations keep.
// Thread-safety: call first thing in main(), before threads start.
#ifndef LATENTKV_COMMON_HEAP_BOUNDS_H_
#define LATENTKV_COMMON_HEAP_BOUNDS_H_

namespace latentkv {

struct HeapBoundsOptions {
  // Allocations at least this large are mmapped (and unmapped on free).
  // Default 256 KiB.
  int mmap_threshold_bytes = 256 << 10;
  // Most malloc arenas (glibc's default is 8 per core). Default 4.
  int max_arenas = 4;
};

// Applies `options` with mallopt. False when malloc refused one (another
// allocator: nothing changes then).
bool BoundHeapGrowth(const HeapBoundsOptions& options = {});

}  // namespace latentkv

#endif  // LATENTKV_COMMON_HEAP_BOUNDS_H_
