// Worker processes of `latentkv serve --device cuda` spread over --gpus:
// ranks of a tensor-parallel group never share a GPU.
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {
namespace {

TEST(WorkerDeviceTest, CpuStaysCpu) {
  ServeOptions o;
  o.device = "cpu";
  o.tp = 4;  // any tp: Gloo groups share the host
  EXPECT_EQ(*WorkerDevice(o, 3), "cpu");
}

TEST(WorkerDeviceTest, CudaProcessesRoundRobinOverTheGpus) {
  ServeOptions o;
  o.device = "cuda";
  o.gpus = 4;
  o.tp = 2;
  // Three groups of two ranks, group-major: every group's ranks differ.
  for (int g = 0; g < 3; ++g) {
    std::set<std::string> group;
    for (int r = 0; r < o.tp; ++r) group.insert(*WorkerDevice(o, g * o.tp + r));
    EXPECT_EQ(group.size(), 2u) << "group " << g;
  }
  EXPECT_EQ(*WorkerDevice(o, 0), "cuda:0");
  EXPECT_EQ(*WorkerDevice(o, 5), "cuda:1");
  o.device = "cuda:2";  // an offset: start at GPU 2
  EXPECT_EQ(*WorkerDevice(o, 0), "cuda:2");
  EXPECT_EQ(*WorkerDevice(o, 3), "cuda:1");
}

TEST(WorkerDeviceTest, OneGpuTakesEveryProcessOfTpOne) {
  ServeOptions o;
  o.device = "cuda";
  o.gpus = 1;
  // Prefill and decode workers on the same GPU.
  EXPECT_EQ(*WorkerDevice(o, 0), "cuda:0");
  EXPECT_EQ(*WorkerDevice(o, 1), "cuda:0");
}

TEST(WorkerDeviceTest, RefusesGroupsLargerThanTheGpus) {
  ServeOptions o;
  o.device = "cuda";
  o.gpus = 1;
  o.tp = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(WorkerDevice(o, 0).status()));
  o.gpus = 0;
  o.tp = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(WorkerDevice(o, 0).status()));
  o.gpus = 1;
  o.device = "cuda:x";
  EXPECT_TRUE(absl::IsInvalidArgument(WorkerDevice(o, 0).status()));
}

}  // namespace
}  // namespace latentkv::cli
