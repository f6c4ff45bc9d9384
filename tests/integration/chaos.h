// Test support for the chaos tests (chaos_test.cc, partition_test.cc):
// long greedy streams run concurrently while something breaks, and the
// checks that follow.
#ifndef LATENTKV_TESTS_INTEGRATION_CHAOS_H_
#define LATENTKV_TESTS_INTEGRATION_CHAOS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "latentkv/v1/generation.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {

// Twelve short story openings.
std::vector<std::string> ChaosPrompts();
// A greedy request for 160 tokens that ignores EOS (a stream long enough to
// be cut in the middle).
latentkv::v1::GenerateRequest ChaosRequest(const std::string& prompt);
// Each prompt's tokens when run alone (a failed call fails the test and
// returns what was gathered so far).
std::vector<std::vector<int32_t>> SoloRuns(
    latentkv::v1::Generation::Stub& stub,
    const std::vector<std::string>& prompts);
// Runs every prompt's ChaosRequest concurrently; once `after_tokens` tokens
// have arrived in all, runs `chaos` (on the calling thread). Each call has
// `timeout_s`.
std::vector<StreamResult> RunWithChaos(latentkv::v1::Generation::Stub& stub,
                                       const std::vector<std::string>& prompts,
                                       int64_t after_tokens,
                                       const std::function<void()>& chaos,
                                       double timeout_s = 120);
// Waits until ListModels reports `workers` registered workers.
bool WaitForWorkers(latentkv::v1::Generation::Stub& stub, int workers,
                    double timeout_s);
// The first child of `pid` whose command line has an argument containing
// `needle`, or -1.
pid_t ChildWithArg(pid_t pid, const std::string& needle);

}  // namespace latentkv::testing

#endif  // LATENTKV_TESTS_INTEGRATION_CHAOS_H_
