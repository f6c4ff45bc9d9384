// OpenMP helpers of the CPU kernels; included only by kernel sources built
// with -fopenmp.
#ifndef LATENTKV_KERNELS_CPU_PARALLEL_H_
#define LATENTKV_KERNELS_CPU_PARALLEL_H_

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace latentkv::kernels::internal {

// Work (multiply-adds or element visits) below which an op stays on the
// calling thread: waking the OpenMP team costs a few microseconds, more than
// the whole op for the small models the engine runs at thousands of tokens/s.
inline constexpr int64_t kParallelMinWork = int64_t{1} << 18;

// Runs f(b0, b1) over [0, blocks) split into contiguous ranges, one per
// OpenMP thread, when `work` is large enough; otherwise f(0, blocks) on the
// calling thread.
template <typename F>
void ParallelForBlocks(int64_t blocks, int64_t work, F&& f) {
  if (blocks <= 0) return;
  int threads = 1;
  if (work >= kParallelMinWork && blocks > 1 && !omp_in_parallel()) {
    threads =
        static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks));
  }
  if (threads <= 1) {
    f(int64_t{0}, blocks);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    f(blocks * t / nt, blocks * (t + 1) / nt);
  }
}

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_PARALLEL_H_
