// The backend seam: selection by name and the CPU backend's ops.
#include "kernels/backend.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

TEST(BackendTest, CreateByName) {
  auto cpu = CreateBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");

#ifndef LATENTKV_WITH_CUDA
  auto cuda = CreateBackend("cuda");
  EXPECT_TRUE(absl::IsUnavailable(cuda.status())) << cuda.status();
  EXPECT_NE(cuda.status().message().find("LATENTKV_WITH_CUDA"),
            std::string::npos);
#else
  // A CUDA build registers "cuda"; without a device (or driver) creating
  // it is UNAVAILABLE, never a crash.
  const std::vector<std::string> names = RegisteredBackends();
  EXPECT_NE(std::find(names.begin(), names.end(), "cuda"), names.end());
  auto cuda = CreateBackend("cuda");
  if (!cuda.ok()) {
    EXPECT_TRUE(absl::IsUnavailable(cuda.status())) << cuda.status();
  } else {
    EXPECT_EQ((*cuda)->name(), "cuda");
    EXPECT_FALSE((*cuda)->host_addressable());
  }
#endif

  const absl::Status unknown = CreateBackend("foo").status();
  EXPECT_TRUE(absl::IsInvalidArgument(unknown));
  EXPECT_NE(unknown.message().find("registered: cpu"), std::string::npos)
      << unknown;
  EXPECT_TRUE(absl::IsInvalidArgument(CreateBackend("").status()));
}

TEST(BackendTest, DeviceNamesCarryAnOrdinal) {
  auto cpu = ParseDeviceName("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->backend, "cpu");
  EXPECT_EQ(cpu->ordinal, 0);
  auto cuda3 = ParseDeviceName("cuda:3");
  ASSERT_TRUE(cuda3.ok());
  EXPECT_EQ(cuda3->backend, "cuda");
  EXPECT_EQ(cuda3->ordinal, 3);
  EXPECT_EQ(ParseDeviceName("cuda")->ordinal, 0);
  for (const char* bad :
       {"cuda:", "cuda:-1", "cuda:x", "cpu:1", "cuda:99999"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseDeviceName(bad).status())) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(CreateBackend(bad).status())) << bad;
  }
  // A valid ordinal without a device (or without CUDA) is UNAVAILABLE.
  auto missing = CreateBackend("cuda:7");
  if (!missing.ok()) {
    EXPECT_TRUE(absl::IsUnavailable(missing.status()) ||
                absl::IsInvalidArgument(missing.status()))
        << missing.status();
  }
}

TEST(BackendTest, RegistryAddsAndListsBackends) {
  EXPECT_EQ(RegisteredBackends().front(), "cpu");
  RegisterBackend("test-failing",
                  []() -> absl::StatusOr<std::unique_ptr<Backend>> {
                    return absl::UnavailableError("no device");
                  });
  const std::vector<std::string> names = RegisteredBackends();
  EXPECT_NE(std::find(names.begin(), names.end(), "test-failing"), names.end());
  EXPECT_EQ(names.front(), "cpu");
  EXPECT_TRUE(absl::IsUnavailable(CreateBackend("test-failing").status()));
}

TEST(BackendTest, AllocReportsExhaustion) {
  auto b = MakeCpuBackend();
  auto ok = b->Alloc(1000, "a test buffer");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->bytes(), 1000u);
  EXPECT_EQ(ok->backend(), b.get());
  DeviceBuffer moved = std::move(*ok);
  EXPECT_EQ(ok->data(), nullptr);
  EXPECT_NE(moved.data(), nullptr);
  auto huge = b->Alloc(size_t{1} << 62, "a huge buffer");
  EXPECT_TRUE(absl::IsResourceExhausted(huge.status())) << huge.status();
  EXPECT_NE(huge.status().message().find("a huge buffer"), std::string::npos);
}

TEST(BackendTest, EventsAfterCopiesAreDoneOnTheCpu) {
  auto b = MakeCpuBackend();
  auto buf = *b->Alloc(16, "event test");
  const int32_t in[4] = {1, 2, 3, 4};
  b->CopyIn(buf.data(), in, sizeof(in));
  std::unique_ptr<Event> e = b->RecordEvent();
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->Done());  // the CPU backend runs everything synchronously
  EXPECT_TRUE(e->Wait().ok());
  int32_t out[4] = {};
  b->CopyOut(out, buf.data(), sizeof(out));
  EXPECT_TRUE(b->RecordEvent()->Wait().ok());
  EXPECT_EQ(out[3], 4);
}

TEST(BackendTest, MemoryRoundTrip) {
  auto b = MakeCpuBackend();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, size_t{1} << 20}) {
    void* p = b->Allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    std::vector<uint8_t> in(bytes), out(bytes, 0);
    std::iota(in.begin(), in.end(), uint8_t{3});
    b->CopyIn(p, in.data(), bytes);
    ASSERT_TRUE(b->Synchronize().ok());
    b->CopyOut(out.data(), p, bytes);
    EXPECT_EQ(in, out);
    b->Free(p);
  }
}

}  // namespace
}  // namespace latentkv::kernels
