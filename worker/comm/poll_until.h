// Waiting for a condition with a deadline by polling: the waits of the NCCL
// communicator (an asynchronous init, a collective on a CUDA stream) and of
// the file rendezvous (a file another rank publishes). Plain C++, no device.
//
// The clock and the sleep are injected (PollClock), so tests can drive a
// wait through its deadline without sleeping.
//
// Thread-safety: PollUntil is reentrant; PollClock::Real() may be used from
// any thread. A fake clock is as thread-safe as its implementation.
#ifndef LATENTKV_WORKER_COMM_POLL_UNTIL_H_
#define LATENTKV_WORKER_COMM_POLL_UNTIL_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace latentkv::comm {

// Time source and sleeper of a polling loop.
class PollClock {
 public:
  virtual ~PollClock() = default;
  virtual absl::Time Now() = 0;
  // Sleeps for `d` > 0; with `d` == 0 only yields the processor.
  virtual void Sleep(absl::Duration d) = 0;

  // absl::Now(), absl::SleepFor() and std::this_thread::yield(). Never null;
  // lives for the whole process.
  static PollClock* Real();
};

struct PollOptions {
  // For this long after the first poll, polls follow each other with only a
  // yield between them (lowest latency, one busy core). Default 0: none.
  absl::Duration spin = absl::ZeroDuration();
  // After the spin phase, the pause between polls starts at `min_interval`
  // and doubles after each pause up to `max_interval` (both > 0, min <= max;
  // the last pause is cut short at the deadline). Defaults 100 us and 10 ms.
  absl::Duration min_interval = absl::Microseconds(100);
  absl::Duration max_interval = absl::Milliseconds(10);
  // Null: PollClock::Real(). Must outlive the call.
  PollClock* clock = nullptr;
};

// Calls `poll` until it answers true (then OK) or an error (then that error),
// or until `deadline` has passed after a poll answering false (then
// DEADLINE_EXCEEDED "<what>: not done after <waited>"). `poll` runs at least
// once, and once more at the deadline when the pauses reach it, so a
// condition that holds by the deadline is seen.
absl::Status PollUntil(absl::Time deadline, const PollOptions& options,
                       absl::string_view what,
                       absl::FunctionRef<absl::StatusOr<bool>()> poll);

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_POLL_UNTIL_H_
