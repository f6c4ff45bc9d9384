// The dlopen'ed cuBLAS/cuBLASLt: every entry point resolves (loading needs
// no GPU), and loading keeps their thread-local storage out of the static
// TLS (a thread on a 64 KiB stack still starts afterwards, which it did not
// with the libraries linked: cublas_loader.h).
#include "kernels/cuda/cublas_loader.h"

#include <pthread.h>

#include <string>

#include "gtest/gtest.h"

namespace latentkv::kernels::cuda {
namespace {

TEST(CublasLoaderTest, ResolvesEveryEntryPointOnce) {
  std::string error;
  const CublasApi* api = LoadCublas(&error);
  ASSERT_NE(api, nullptr) << error;
  EXPECT_NE(api->sgemm, nullptr);
  EXPECT_NE(api->lt_matmul, nullptr);
  EXPECT_NE(api->lt_heuristic, nullptr);
  EXPECT_EQ(LoadCublas(&error), api);
}

TEST(CublasLoaderTest, SmallStackThreadsStillStart) {
  std::string error;
  ASSERT_NE(LoadCublas(&error), nullptr) << error;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 64 << 10), 0);
  pthread_t t;
  const int rc = pthread_create(
      &t, &attr, [](void*) -> void* { return nullptr; }, nullptr);
  pthread_attr_destroy(&attr);
  ASSERT_EQ(rc, 0) << "a 64 KiB-stack thread failed to start";
  pthread_join(t, nullptr);
}

}  // namespace
}  // namespace latentkv::kernels::cuda
