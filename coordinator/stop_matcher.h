// Stop strings over streamed text: decides how much of the text generated so
// far can be sent, holding back a tail that might be the start of a stop
// string, and detects a completed stop string (which is not sent).
// Control-plane only. Thread-safety: one per stream.
#ifndef LATENTKV_COORDINATOR_STOP_MATCHER_H_
#define LATENTKV_COORDINATOR_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace latentkv::coordinator {

class StopMatcher {
 public:
  // Empty strings among `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds newly generated text; returns the text now safe to send. After a
  // stop string completes, stopped() is true and the returned text ends just
  // before the stop string.
  std::string Push(std::string_view text);
  // The held-back tail (call at the end of a stream that did not stop).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_STOP_MATCHER_H_
