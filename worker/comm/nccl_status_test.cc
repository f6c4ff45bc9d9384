// The NCCL result -> absl::Status mapping (no CUDA needed).
#include "worker/comm/nccl_status.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::comm {
namespace {

using ::testing::HasSubstr;

TEST(NcclStatusTest, EveryResultMapsToItsCode) {
  struct Case {
    int result;
    absl::StatusCode code;
    const char* name;
  };
  const Case cases[] = {
      {kNcclSuccess, absl::StatusCode::kOk, "ncclSuccess"},
      {kNcclUnhandledCudaError, absl::StatusCode::kInternal,
       "ncclUnhandledCudaError"},
      {kNcclSystemError, absl::StatusCode::kUnavailable, "ncclSystemError"},
      {kNcclInternalError, absl::StatusCode::kInternal, "ncclInternalError"},
      {kNcclInvalidArgument, absl::StatusCode::kInternal,
       "ncclInvalidArgument"},
      {kNcclInvalidUsage, absl::StatusCode::kInternal, "ncclInvalidUsage"},
      {kNcclRemoteError, absl::StatusCode::kUnavailable, "ncclRemoteError"},
      {kNcclInProgress, absl::StatusCode::kInternal, "ncclInProgress"},
      {42, absl::StatusCode::kInternal, "ncclResult 42"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(NcclResultName(c.result), c.name);
    const absl::Status s = NcclResultToStatus(c.result, "ncclAllReduce");
    EXPECT_EQ(s.code(), c.code);
    if (!s.ok()) {
      EXPECT_EQ(s.message(), std::string("ncclAllReduce: ") + c.name);
    }
  }
}

TEST(NcclStatusTest, DetailIsAppended) {
  const absl::Status s = NcclResultToStatus(
      kNcclRemoteError, "NCCL AllReduceSum (rank 0 of 2)", "peer closed");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("(rank 0 of 2): ncclRemoteError: peer "
                                     "closed"));
}

}  // namespace
}  // namespace latentkv::comm
