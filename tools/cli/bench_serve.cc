// `latentkv bench serve`: turns the flags into a bench::ServeBenchOptions,
// runs it (tools/bench/serve_bench.h), prints the table, writes the JSON and
// optionally draws it with tools/plot_bench.py.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tools/bench/report.h"
#include "tools/cli/commands.h"

extern char** environ;

namespace latentkv::cli {
namespace {

namespace fs = std::filesystem;

// Runs python3 plot_bench.py JSON --out PNG; returns its exit status. The
// Debian interpreter (/usr/bin/python3, where tools/install_deps.sh puts
// matplotlib) is preferred over another python3 on PATH.
int Plot(const std::string& script, const std::string& json,
         const std::string& png) {
  const std::string python =
      fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> args = {python, script, json, "--out", png};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, python.c_str(), nullptr, nullptr, argv.data(),
                   environ) != 0) {
    std::perror("posix_spawnp python3");
    return 1;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int BenchServe(const BenchServeOptions& in) {
  if (in.subcommand != "serve") {
    std::fprintf(stderr,
                 "usage: latentkv bench serve --server HOST:PORT ...\n");
    return 2;
  }
  bench::ServeBenchOptions o = in.bench;
  if (!in.compare.empty()) {
    if (!in.server.empty() || in.compare.size() < 2) {
      std::fprintf(stderr,
                   "--compare needs 2 or more targets and no --server\n");
      return 2;
    }
    for (const std::string& spec : in.compare) {
      absl::StatusOr<bench::Target> t = bench::ParseTarget(spec);
      if (!t.ok()) {
        std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
        return 2;
      }
      o.targets.push_back(*t);
    }
  } else {
    if (in.server.empty()) {
      std::fprintf(stderr, "--server HOST:PORT (or --compare) is required\n");
      return 2;
    }
    absl::StatusOr<v1::KvCacheMode> mode =
        bench::ParseKvCacheMode(in.kv_cache_mode);
    if (!mode.ok()) {
      std::fprintf(stderr, "%s\n", mode.status().ToString().c_str());
      return 2;
    }
    o.targets.push_back({in.server, in.server, *mode});
  }
  o.rates = {in.request_rate};
  if (!in.sweep_rates.empty()) {
    absl::StatusOr<std::vector<double>> rates =
        bench::ParseRates(in.sweep_rates);
    if (!rates.ok()) {
      std::fprintf(stderr, "%s\n", rates.status().ToString().c_str());
      return 2;
    }
    o.rates = *rates;
  }
  if (!in.goodput.empty()) {
    absl::StatusOr<bench::Slo> slo = bench::ParseSlo(in.goodput);
    if (!slo.ok()) {
      std::fprintf(stderr, "%s\n", slo.status().ToString().c_str());
      return 2;
    }
    o.slo = *slo;
  }
  if (in.plot && in.output.empty()) {
    std::fprintf(stderr, "--plot needs --output FILE.json\n");
    return 2;
  }
  absl::StatusOr<std::vector<bench::PhaseReport>> phases =
      bench::RunServeBench(o);
  if (!phases.ok()) {
    std::fprintf(stderr, "bench serve: %s\n",
                 phases.status().ToString().c_str());
    return 1;
  }
  std::fputs(bench::FormatTable(*phases).c_str(), stdout);
  std::fflush(stdout);
  if (in.output.empty()) return 0;
  {
    std::ofstream out(in.output);
    out << bench::ToJson(o, *phases).dump(1) << "\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", in.output.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "wrote %s\n", in.output.c_str());
  if (!in.plot) return 0;
  fs::path png(in.output);
  png.replace_extension(".png");
  const fs::path script =
      fs::read_symlink("/proc/self/exe").parent_path() / "plot_bench.py";
  if (Plot(script.string(), in.output, png.string()) != 0) {
    std::fprintf(stderr, "plotting with %s failed\n", script.c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s\n", png.c_str());
  return 0;
}

}  // namespace latentkv::cli
