#include "tests/integration/metrics_scrape.h"

#include <cmath>
#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/integration/process.h"

namespace latentkv::testing {

std::vector<Sample> Parse(const std::string& text) {
  std::vector<Sample> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) continue;
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      // name="value" pairs; values are quoted with \\, \" and \n escapes
      // and may hold any character, '}' and ',' included.
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          ADD_FAILURE() << "malformed labels: " << line;
          return out;
        }
        std::string value;
        size_t k = eq + 2;
        for (; k < line.size() && line[k] != '"'; ++k) {
          if (line[k] == '\\' && k + 1 < line.size()) {
            ++k;
            value.push_back(line[k] == 'n' ? '\n' : line[k]);
          } else {
            value.push_back(line[k]);
          }
        }
        s.labels[line.substr(i, eq - i)] = value;
        i = k + 1;  // past the closing quote
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // past '}'
    }
    const std::string v = line.substr(line.find(' ', i) + 1);
    s.value = v == "+Inf" ? INFINITY : std::strtod(v.c_str(), nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Sample> Scrape(int port) {
  int code = -1;
  const std::string text =
      RunCommand({"curl", "-sS", "--max-time", "10",
                  "http://127.0.0.1:" + std::to_string(port) + "/metrics"},
                 &code);
  EXPECT_EQ(code, 0) << text;
  return Parse(text);
}

double Get(const std::vector<Sample>& s, const std::string& name,
           const std::map<std::string, std::string>& labels) {
  for (const Sample& x : s) {
    if (x.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = x.labels.find(k);
      match &= it != x.labels.end() && it->second == v;
    }
    if (match) return x.value;
  }
  return NAN;
}

}  // namespace latentkv::testing
