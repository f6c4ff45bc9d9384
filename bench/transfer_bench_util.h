// What transfer_bench and tp_transfer_bench share: the synthetic prompt and
// running one request to its end.
#ifndef LATENTKV_BENCH_TRANSFER_BENCH_UTIL_H_
#define LATENTKV_BENCH_TRANSFER_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <utility>
#include <vector>

#include "worker/engine/engine.h"

namespace latentkv::bench {

// n token ids: BOS, then a fixed pattern over the synthetic model's vocab.
inline std::vector<int32_t> SyntheticPrompt(int n) {
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(3 + (i * 131) % 4000);
  return p;
}

// Submits `r` and waits for its final event; seconds. Aborts when the
// engine refuses it.
inline double RunToEnd(worker::Engine& e, worker::GenerationRequest r) {
  std::promise<void> done;
  const auto t0 = std::chrono::steady_clock::now();
  if (!e.Submit(std::move(r), [&](const worker::GenerationEvent& ev) {
          if (ev.finish != worker::FinishReason::kNone || !ev.status.ok()) {
            done.set_value();
          }
        }).ok()) {
    std::abort();
  }
  done.get_future().wait();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

}  // namespace latentkv::bench

#endif  // LATENTKV_BENCH_TRANSFER_BENCH_UTIL_H_
