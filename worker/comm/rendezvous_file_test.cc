// The file rendezvous: names, publish/read across threads, deadlines, stale
// and foreign files, and that a reader never sees a partial write.
#include "worker/comm/rendezvous_file.h"

#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::comm {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/latentkv-rendezvous-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::vector<std::string> Files() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_)) {
      out.push_back(e.path().filename().string());
    }
    return out;
  }

 private:
  std::string path_;
};

// Fast polling for the tests.
PollOptions Fast() {
  PollOptions o;
  o.min_interval = absl::Microseconds(100);
  o.max_interval = absl::Milliseconds(2);
  return o;
}

// `n` bytes that differ from position to position and from `seed` to seed.
std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(RendezvousPathTest, EscapesEverythingButAlnumDashUnderscore) {
  EXPECT_EQ(RendezvousPath("/d", "group0", "nccl-unique-id"),
            "/d/latentkv.group0.nccl-unique-id");
  EXPECT_EQ(RendezvousPath("/d", "a/b c.%", "k"),
            "/d/latentkv.a%2Fb%20c%2E%25.k");
  // The separator is escaped inside names, so pairs never collide.
  EXPECT_NE(RendezvousPath("/d", "a.b", "c"), RendezvousPath("/d", "a", "b.c"));
  EXPECT_EQ(RendezvousPath("/d", "", "k"), "/d/latentkv..k");
}

TEST(RendezvousFileTest, PublishThenReadLeavesOnlyTheFile) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  const std::string blob = Pattern(128, 1);
  ASSERT_TRUE(PublishBlob(path, blob).ok());
  EXPECT_EQ(dir.Files(), std::vector<std::string>{"latentkv.g.id"});
  absl::StatusOr<std::string> read =
      ReadBlob(path, blob.size(), absl::Now() + absl::Seconds(5), Fast());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, blob);
  EXPECT_EQ(std::filesystem::status(path).permissions() &
                std::filesystem::perms::others_read,
            std::filesystem::perms::others_read);
  ASSERT_TRUE(RemoveBlob(path).ok());
  EXPECT_TRUE(dir.Files().empty());
  EXPECT_TRUE(RemoveBlob(path).ok());  // absent: still OK
}

TEST(RendezvousFileTest, ReadersInOtherThreadsWaitForThePublisher) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  const std::string blob = Pattern(128, 2);
  std::vector<absl::StatusOr<std::string>> got(3, absl::UnknownError(""));
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      got[r] =
          ReadBlob(path, blob.size(), absl::Now() + absl::Seconds(10), Fast());
    });
  }
  absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(PublishBlob(path, blob).ok());
  for (std::thread& t : readers) t.join();
  for (const auto& g : got) {
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(*g, blob);
  }
}

TEST(RendezvousFileTest, NobodyPublishesIsDeadlineExceeded) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> read =
      ReadBlob(path, 128, start + absl::Milliseconds(100), Fast());
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_GE(waited, absl::Milliseconds(100));
  EXPECT_LT(waited, absl::Seconds(3));
}

TEST(RendezvousFileTest, ExistingFileIsStaleAndKept) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  const std::string old_blob = Pattern(128, 3);
  ASSERT_TRUE(PublishBlob(path, old_blob).ok());
  const absl::Status s = PublishBlob(path, Pattern(128, 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("already exists"));
  // The stale file is untouched and no temp file is left behind.
  EXPECT_EQ(dir.Files(), std::vector<std::string>{"latentkv.g.id"});
  EXPECT_EQ(*ReadBlob(path, 128, absl::Now(), Fast()), old_blob);
  // Once removed, the name can be published again.
  ASSERT_TRUE(RemoveBlob(path).ok());
  EXPECT_TRUE(PublishBlob(path, Pattern(128, 4)).ok());
}

TEST(RendezvousFileTest, TempFilesOfADeadWriterAreIgnored) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  WriteRaw(path + ".tmp.abc123", "partial");
  absl::StatusOr<std::string> read =
      ReadBlob(path, 128, absl::Now() + absl::Milliseconds(20), Fast());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(PublishBlob(path, Pattern(128, 5)).ok());
}

TEST(RendezvousFileTest, WrongSizeIsAnErrorAtOnce) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "id");
  WriteRaw(path, std::string(100, 'x'));
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> read =
      ReadBlob(path, 128, start + absl::Seconds(30), Fast());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(read.status().message(), HasSubstr("holds 100 bytes"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // not at the deadline
}

TEST(RendezvousFileTest, PublishIntoMissingDirectoryFails) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path() + "/missing", "g", "id");
  const absl::Status s = PublishBlob(path, Pattern(128, 6));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(dir.Files().empty());
}

// Readers spinning on the name while a large blob is being written must
// see nothing or all of it: a torn write would show as a size mismatch
// (FAILED_PRECONDITION) or wrong bytes.
TEST(RendezvousFileTest, TornWriteIsNeverObserved) {
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "g", "big");
  constexpr size_t kBytes = size_t{4} << 20;
  PollOptions spin;
  spin.min_interval = absl::Nanoseconds(1);
  spin.max_interval = absl::Nanoseconds(1);
  for (uint32_t round = 0; round < 8; ++round) {
    const std::string blob = Pattern(kBytes, 100 + round);
    std::atomic<bool> go{false};
    std::vector<absl::StatusOr<std::string>> got(2, absl::UnknownError(""));
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
      readers.emplace_back([&, r] {
        while (!go.load()) {
        }
        got[r] = ReadBlob(path, kBytes, absl::Now() + absl::Seconds(20), spin);
      });
    }
    go = true;
    ASSERT_TRUE(PublishBlob(path, blob).ok());
    for (std::thread& t : readers) t.join();
    for (const auto& g : got) {
      ASSERT_TRUE(g.ok()) << "round " << round << ": " << g.status();
      ASSERT_TRUE(*g == blob) << "round " << round << ": wrong bytes";
    }
    ASSERT_TRUE(RemoveBlob(path).ok());
  }
  EXPECT_TRUE(dir.Files().empty());
}

}  // namespace
}  // namespace latentkv::comm
