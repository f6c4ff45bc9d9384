// API keys: loading from the flag and the file, matching, Bearer parsing.
#include "common/auth/api_keys.h"

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace latentkv::auth {
namespace {

std::string TempFile(const std::string& content) {
  std::string path = ::testing::TempDir() + "/keys-XXXXXX";
  std::ofstream(path) << content;
  return path;
}

TEST(ApiKeySetTest, EmptySetLetsEverythingThrough) {
  auto set = ApiKeySet::Load("", "");
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->empty());
  EXPECT_TRUE(set->CheckBearer("").ok());
}

TEST(ApiKeySetTest, KeysFromTheFlagAndTheFile) {
  const std::string file = TempFile(
      "# ops team\n\n  sk-file-key-0123456789  \nsk-file-key-abcdefghij\n");
  auto set =
      ApiKeySet::Load("sk-flag-key-0123456789, sk-flag-key-zzzzzzzzzz", file);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 4u);
  for (const char* k : {"sk-flag-key-0123456789", "sk-flag-key-zzzzzzzzzz",
                        "sk-file-key-0123456789", "sk-file-key-abcdefghij"}) {
    EXPECT_TRUE(set->Matches(k)) << k;
  }
  // Prefixes, extensions and case changes are other keys.
  for (const char* k : {"sk-flag-key-012345678", "sk-flag-key-01234567890",
                        "SK-FLAG-KEY-0123456789", "", "# ops team"}) {
    EXPECT_FALSE(set->Matches(k)) << k;
  }
}

TEST(ApiKeySetTest, BearerHeader) {
  auto set = ApiKeySet::Load("sk-flag-key-0123456789", "");
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->CheckBearer("Bearer sk-flag-key-0123456789").ok());
  EXPECT_TRUE(set->CheckBearer("bearer sk-flag-key-0123456789").ok());
  EXPECT_TRUE(absl::IsUnauthenticated(set->CheckBearer("")));
  EXPECT_NE(set->CheckBearer("").message().find("missing"), std::string::npos);
  for (const char* h : {"Bearer", "Bearer ", "Basic sk-flag-key-0123456789",
                        "sk-flag-key-0123456789", "Bearer sk-flag-key-01234",
                        "Bearer  sk-flag-key-0123456789"}) {
    const absl::Status st = set->CheckBearer(h);
    EXPECT_TRUE(absl::IsUnauthenticated(st)) << h;
    EXPECT_EQ(st.message().find("sk-flag"), std::string::npos)
        << "the message never echoes a key";
  }
}

TEST(ApiKeySetTest, RefusesWeakOrMalformedKeysWithoutEchoingThem) {
  for (const char* csv :
       {"tiny-key", "sk-has a space-0123456789", "sk-tab\tkey-0123456789"}) {
    auto set = ApiKeySet::Load(csv, "");
    EXPECT_TRUE(absl::IsInvalidArgument(set.status())) << csv;
    EXPECT_EQ(set.status().message().find(csv), std::string::npos);
  }
  EXPECT_TRUE(absl::IsInvalidArgument(
      ApiKeySet::Load("", "/nonexistent/keys").status()));
}

}  // namespace
}  // namespace latentkv::auth
