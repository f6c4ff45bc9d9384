// Test support: scraping a Prometheus /metrics endpoint over HTTP (curl)
// and reading its text format.
#ifndef LATENTKV_TESTS_INTEGRATION_METRICS_SCRAPE_H_
#define LATENTKV_TESTS_INTEGRATION_METRICS_SCRAPE_H_

#include <map>
#include <string>
#include <vector>

namespace latentkv::testing {

// One sample of the Prometheus text format.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of a text-format exposition (comments skipped).
std::vector<Sample> Parse(const std::string& text);
// GET http://127.0.0.1:port/metrics, parsed (a failed fetch is a test
// failure).
std::vector<Sample> Scrape(int port);
// The value of name{labels} (labels a subset), or NaN when absent.
double Get(const std::vector<Sample>& s, const std::string& name,
           const std::map<std::string, std::string>& labels = {});

}  // namespace latentkv::testing

#endif  // LATENTKV_TESTS_INTEGRATION_METRICS_SCRAPE_H_
