#include "common/text_lines.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace latentkv {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string line; GetTextLine(in, &line);) out.push_back(line);
  return out;
}

TEST(GetTextLineTest, CrlfAndLfGiveTheSameLines) {
  const std::string unix_text = "Once upon a time.\n\nThe end.\nlast";
  std::string dos_text;
  for (char c : unix_text) {
    if (c == '\n') dos_text += '\r';
    dos_text += c;
  }
  EXPECT_EQ(Lines(dos_text), Lines(unix_text));
  EXPECT_EQ(Lines(unix_text), (std::vector<std::string>{"Once upon a time.", "",
                                                        "The end.", "last"}));
  // A '\r' that does not end the line stays.
  EXPECT_EQ(Lines("a\rb\r\n"), (std::vector<std::string>{"a\rb"}));
}

}  // namespace
}  // namespace latentkv
