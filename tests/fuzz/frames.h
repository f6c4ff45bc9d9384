// The framing of fuzz inputs that carry several protobuf messages: each is a
// 2-byte little-endian length and that many bytes (a short last frame takes
// what is left). Shared by the targets and seedgen.cc.
#ifndef LATENTKV_TESTS_FUZZ_FRAMES_H_
#define LATENTKV_TESTS_FUZZ_FRAMES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace latentkv::fuzz {

inline std::vector<std::string_view> SplitFrames(std::string_view in) {
  std::vector<std::string_view> frames;
  while (in.size() >= 2) {
    const size_t n = static_cast<uint8_t>(in[0]) |
                     static_cast<size_t>(static_cast<uint8_t>(in[1])) << 8;
    in.remove_prefix(2);
    frames.push_back(in.substr(0, n));
    in.remove_prefix(frames.back().size());
  }
  return frames;
}

inline void AppendFrame(std::string_view frame, std::string* out) {
  out->push_back(static_cast<char>(frame.size() & 0xff));
  out->push_back(static_cast<char>((frame.size() >> 8) & 0xff));
  out->append(frame);
}

}  // namespace latentkv::fuzz

#endif  // LATENTKV_TESTS_FUZZ_FRAMES_H_
