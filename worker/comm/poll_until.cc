#include "worker/comm/poll_until.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace latentkv::comm {
namespace {

class RealClock final : public PollClock {
 public:
  absl::Time Now() override { return absl::Now(); }
  void Sleep(absl::Duration d) override {
    if (d <= absl::ZeroDuration()) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(d);
    }
  }
};

}  // namespace

PollClock* PollClock::Real() {
  static RealClock* const clock = new RealClock();
  return clock;
}

absl::Status PollUntil(absl::Time deadline, const PollOptions& options,
                       absl::string_view what,
                       absl::FunctionRef<absl::StatusOr<bool>()> poll) {
  PollClock* clock =
      options.clock != nullptr ? options.clock : PollClock::Real();
  const absl::Duration min_interval =
      std::max(options.min_interval, absl::Nanoseconds(1));
  const absl::Duration max_interval =
      std::max(options.max_interval, min_interval);
  const absl::Time start = clock->Now();
  const absl::Time spin_end =
      start + std::max(options.spin, absl::ZeroDuration());
  absl::Duration interval = min_interval;
  while (true) {
    absl::StatusOr<bool> done = poll();
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
    const absl::Time now = clock->Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, ": not done after ", absl::FormatDuration(now - start)));
    }
    if (now < spin_end) {
      clock->Sleep(absl::ZeroDuration());
      continue;
    }
    clock->Sleep(std::min(interval, deadline - now));
    interval = std::min(interval * 2, max_interval);
  }
}

}  // namespace latentkv::comm
