// The cluster credential: loading and the fresh secret serve writes (the
// servers' checks run in tests/integration/internal_auth_test.cc).
#include "common/auth/cluster_secret.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace latentkv::auth {
namespace {

class ClusterSecretTest : public ::testing::Test {
 protected:
  void TearDown() override { ClearClusterSecretForTest(); }
};

TEST_F(ClusterSecretTest, FreshSecretIsPrivateRandomAndLoads) {
  const std::string a = ::testing::TempDir() + "/secret-a";
  const std::string b = ::testing::TempDir() + "/secret-b";
  std::remove(a.c_str());
  std::remove(b.c_str());
  ASSERT_TRUE(WriteNewClusterSecret(a).ok());
  ASSERT_TRUE(WriteNewClusterSecret(b).ok());
  struct stat st {};
  ASSERT_EQ(stat(a.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string sa, sb;
  std::getline(std::ifstream(a), sa);
  std::getline(std::ifstream(b), sb);
  EXPECT_EQ(sa.size(), 64u);
  EXPECT_NE(sa, sb);
  EXPECT_FALSE(WriteNewClusterSecret(a).ok()) << "never overwrites";
  EXPECT_FALSE(HasClusterSecret());
  ASSERT_TRUE(LoadClusterSecret(a).ok());
  EXPECT_TRUE(HasClusterSecret());
}

TEST_F(ClusterSecretTest, RefusesWeakSecretsWithoutEchoingThem) {
  const std::string f = ::testing::TempDir() + "/secret-weak";
  std::ofstream(f) << "too-short-secret\n";
  const absl::Status st = LoadClusterSecret(f);
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_EQ(st.message().find("too-short"), std::string::npos);
  EXPECT_FALSE(HasClusterSecret());
  EXPECT_TRUE(absl::IsInvalidArgument(LoadClusterSecret("/nonexistent")));
  EXPECT_TRUE(LoadClusterSecret("").ok());  // none: open
  EXPECT_FALSE(HasClusterSecret());
}

}  // namespace
}  // namespace latentkv::auth
