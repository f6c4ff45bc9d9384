// latentkv-kvstore as a real process on 127.0.0.1 with an ephemeral port,
// driven through KvStoreClient.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvstore/chain_key.h"
#include "kvstore/client.h"
#include "kvstore/layout.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

using ::latentkv::kvstore::Block;
using ::latentkv::kvstore::BlockKey;
using ::latentkv::kvstore::Event;
using ::latentkv::kvstore::EventKind;
using ::latentkv::kvstore::EventReader;
using ::latentkv::kvstore::KvLayout;
using ::latentkv::kvstore::KvStoreClient;
using ::testing::HasSubstr;

constexpr int kLayerBytes = 64 << 10;  // 2 present layers: 128 KiB a block

KvLayout Layout() {
  KvLayout l;
  l.model_id = "stories260K";
  l.num_layers = 3;
  l.num_kv_heads = 4;
  l.d_qk = {16, 8, 8};
  l.d_vo = {32, 16, 8};
  l.dtype = "f32";
  l.block_tokens = 16;
  l.codec = "spindle";
  return l;
}

// The blocks of `tokens` (full blocks only); layer 1 absent in odd blocks,
// layer 2 absent everywhere, payload bytes derived from the key.
std::vector<Block> BlocksOf(const std::vector<int32_t>& tokens) {
  const KvLayout l = Layout();
  const std::vector<BlockKey> keys = kvstore::PrefixKeys(tokens, 16);
  std::vector<Block> out;
  for (size_t i = 0; i < keys.size(); ++i) {
    Block b;
    b.key = keys[i];
    b.parent = i ? keys[i - 1] : 0;
    b.tokens.assign(tokens.begin() + 16 * i, tokens.begin() + 16 * (i + 1));
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      const bool present = layer == 0 || (layer == 1 && i % 2 == 0);
      std::string data;
      if (present) {
        data.resize(kLayerBytes);
        for (int j = 0; j < kLayerBytes; ++j) {
          data[j] = static_cast<char>((b.key >> (j % 57)) ^ (j * 131 + layer));
        }
      }
      b.layers.push_back({layer, present, std::move(data)});
      b.layers.back().Seal();
    }
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<int32_t> Prompt(int seed, int tokens) {
  std::vector<int32_t> t(tokens);
  for (int i = 0; i < tokens; ++i) t[i] = (seed * 7919 + i * 31) % 512;
  return t;
}

class KvStoreProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    // 1 MiB holds 8 blocks of 128 KiB; requests above 4 MiB are refused.
    process_ = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/latentkv-kvstore", "--port=0",
                                 "--port_file=" + dir_ + "/kvstore.addr",
                                 "--capacity_mb=1", "--max_events=64",
                                 "--max_request_mb=4"},
        dir_ + "/kvstore.log");
    address_ = WaitForLine(dir_ + "/kvstore.addr", 30);
    ASSERT_FALSE(address_.empty()) << "latentkv-kvstore did not start";
    client_ = KvStoreClient::Connect(address_);
  }

  std::unique_ptr<Process> process_;
  std::unique_ptr<KvStoreClient> client_;
  std::string dir_;
  std::string address_;
};

TEST_F(KvStoreProcessTest, PutLookupGetEvictSubscribeSnapshotShutdown) {
  const KvLayout layout = Layout();
  // A subscriber from the beginning, collecting events on its own thread.
  std::unique_ptr<EventReader> reader = client_->Subscribe(0);
  std::mutex mu;
  std::vector<Event> events;
  absl::Status sub_status;
  std::thread sub([&] {
    Event e;
    while (reader->Next(&e)) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(e);
    }
    std::lock_guard<std::mutex> lock(mu);
    sub_status = reader->Finish();
  });

  // A chain of 4 blocks; the prompt has 6 full blocks and a partial one.
  const std::vector<int32_t> prompt = Prompt(1, 6 * 16 + 5);
  const std::vector<Block> all = BlocksOf(prompt);
  ASSERT_EQ(all.size(), 6u);
  auto put = client_->Put(layout, {all.data(), 4});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->stored, 4);

  const std::vector<BlockKey> keys = kvstore::PrefixKeys(prompt, 16);
  auto hit = client_->Lookup(layout, keys);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(hit->num_hits, 4);
  EXPECT_EQ(hit->bytes, int64_t{kLayerBytes} * (2 + 1 + 2 + 1));

  auto got = client_->Get(layout, keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const Block& g = (*got)[i];
    EXPECT_EQ(g.key, all[i].key);
    EXPECT_EQ(g.parent, all[i].parent);
    EXPECT_EQ(g.tokens, all[i].tokens);
    ASSERT_EQ(g.layers.size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(g.layers[j].layer, all[i].layers[j].layer);
      EXPECT_EQ(g.layers[j].present, all[i].layers[j].present);
      EXPECT_TRUE(g.layers[j].data == all[i].layers[j].data)
          << "block " << i << " layer " << j << " differs";
    }
  }

  // A layout mismatch is refused and names the field.
  KvLayout other = layout;
  other.d_vo[1] = 4;
  auto bad = client_->Lookup(other, keys);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(), HasSubstr("d_vo[1]"));
  other = layout;
  other.codec = "raw";
  EXPECT_EQ(client_->Put(other, {all.data(), 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A corrupt key is INVALID_ARGUMENT.
  Block corrupt = BlocksOf(Prompt(9, 16))[0];
  corrupt.key ^= 0x10;
  EXPECT_EQ(client_->Put(layout, {&corrupt, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A payload that changed on the way (its checksum no longer matches) is
  // DATA_LOSS, and nothing of the request is stored.
  Block flipped = BlocksOf(Prompt(11, 16))[0];
  flipped.layers[0].data[100] ^= 1;
  EXPECT_EQ(client_->Put(layout, {&flipped, 1}).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(client_->Lookup(layout, {flipped.key})->num_hits, 0);
  // A request over --max_request_mb is RESOURCE_EXHAUSTED.
  Block huge = BlocksOf(Prompt(10, 16))[0];
  huge.layers[0].data.assign(5 << 20, 'x');
  EXPECT_EQ(client_->Put(layout, {&huge, 1}).status().code(),
            absl::StatusCode::kResourceExhausted);

  // 8 more blocks (each 256 KiB or 128 KiB) force evictions.
  const std::vector<Block> second = BlocksOf(Prompt(2, 8 * 16));
  auto put2 = client_->Put(layout, second);
  ASSERT_TRUE(put2.ok()) << put2.status();
  EXPECT_EQ(put2->stored, 8);
  EXPECT_LT(client_->Lookup(layout, keys)->num_hits, 4);

  // Snapshot: within capacity, chains closed, equal to replaying the events.
  auto snap = client_->Snapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_LE(snap->bytes_used, snap->capacity_bytes);
  EXPECT_EQ(snap->capacity_bytes, 1 << 20);
  ASSERT_TRUE(snap->layout.has_value());
  EXPECT_TRUE(*snap->layout == layout);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!events.empty() && events.back().seq >= snap->seq) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  absl::flat_hash_map<BlockKey, BlockKey> replay, want;
  int stored = 0, removed = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_FALSE(events.empty());
    ASSERT_EQ(events.back().seq, snap->seq);
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].seq, i + 1);
      if (events[i].kind == EventKind::kStored) {
        ++stored;
        replay[events[i].key] = events[i].parent;
      } else {
        ++removed;
        EXPECT_TRUE(replay.contains(events[i].key));
        replay.erase(events[i].key);
      }
    }
    // The first four events are the first chain's STORED, in order.
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(events[i].kind, EventKind::kStored);
      EXPECT_EQ(events[i].key, all[i].key);
    }
  }
  EXPECT_EQ(stored, 12);
  EXPECT_GT(removed, 0);
  for (const auto& e : snap->blocks) {
    if (e.parent != 0) {
      EXPECT_TRUE(want.contains(e.parent));
    }
    want[e.key] = e.parent;
  }
  EXPECT_EQ(replay, want);

  // A subscription that is ahead of the store must start over.
  auto ahead = client_->Subscribe(snap->seq + 100);
  Event e;
  EXPECT_FALSE(ahead->Next(&e));
  EXPECT_EQ(ahead->Finish().code(), absl::StatusCode::kOutOfRange);

  // SIGTERM: the subscriber's stream ends and the process exits cleanly.
  client_.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const int status = process_->Stop(SIGTERM, 20);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  sub.join();
  ASSERT_NE(status, -1) << "did not exit on SIGTERM";
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(seconds, 10);
  EXPECT_EQ(sub_status.code(), absl::StatusCode::kUnavailable) << sub_status;
}

TEST_F(KvStoreProcessTest, StaleSubscriberMustSnapshot) {
  const KvLayout layout = Layout();
  // 70 events > --max_events=64: events after seq 0 left the ring.
  for (int i = 0; i < 70; ++i) {
    const std::vector<Block> b = BlocksOf(Prompt(100 + i, 16));
    ASSERT_TRUE(client_->Put(layout, b).ok());
  }
  auto stale = client_->Subscribe(0);
  Event e;
  EXPECT_FALSE(stale->Next(&e));
  EXPECT_EQ(stale->Finish().code(), absl::StatusCode::kOutOfRange);
  // Snapshot, then subscribing from its seq and epoch works.
  auto snap = client_->Snapshot();
  ASSERT_TRUE(snap.ok());
  auto fresh = client_->Subscribe(snap->seq, snap->epoch);
  ASSERT_TRUE(client_->Put(layout, BlocksOf(Prompt(999, 16))).ok());
  ASSERT_TRUE(fresh->Next(&e));
  EXPECT_GT(e.seq, snap->seq);
  fresh->Cancel();
  EXPECT_FALSE(fresh->Next(&e));
  // Another incarnation's epoch is refused.
  auto foreign = client_->Subscribe(snap->seq, snap->epoch + 1);
  EXPECT_FALSE(foreign->Next(&e));
  EXPECT_EQ(foreign->Finish().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(KvStoreProcessTest, ServesGrpcHealth) {
  // grpc.health.v1.Health/Check with an empty request (the whole server);
  // the answer {status: SERVING} encodes as the bytes 08 01.
  grpc::GenericStub stub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty_slice(std::string(""));
  grpc::ByteBuffer request(&empty_slice, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) {
    bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

}  // namespace
}  // namespace latentkv::testing
