// kvstore payloads (kvstore/): a Put request's wire form (PutRequest bytes
// after the first input byte) through the conversions (proto_convert.h), the
// layout checks (layout.h) and a fresh BlockStore's Put (keys, parents,
// checksums, sizes); then Lookup and Get of its keys, and a worker's reading
// of the blocks it gets (worker/server/store_rows.h: sizes, checksums,
// non-finite rows). Bit 0 of the first byte re-keys and re-seals the blocks
// first (as an honest peer would), so the fuzzer also gets past the
// XXH3 keys and checksums.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvstore/block_store.h"
#include "kvstore/chain_key.h"
#include "kvstore/layout.h"
#include "kvstore/proto_convert.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/kv_shapes.h"
#include "worker/server/store_rows.h"

namespace kv = latentkv::kvstore;
namespace lf = latentkv::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lf::Input in(data, size);
  const uint8_t mode = in.Byte();
  latentkv::v1::PutRequest req;
  if (!req.ParseFromArray(in.data(), static_cast<int>(in.size()))) return 0;
  const kv::KvLayout layout = kv::FromProto(req.layout());
  (void)kv::LayoutDebugString(layout);
  if (!kv::ValidateLayout(layout).ok()) return 0;
  std::vector<kv::Block> blocks;
  for (const latentkv::v1::KvBlock& b : req.blocks()) {
    blocks.push_back(kv::FromProto(b));
    latentkv::v1::KvBlock back;
    kv::ToProto(blocks.back(), &back);
  }
  if (mode & 1) {
    kv::BlockKey parent = 0;
    for (kv::Block& b : blocks) {
      b.parent = parent;
      b.key = kv::ChainKey(parent, b.tokens.data(),
                           static_cast<int>(b.tokens.size()));
      parent = b.key;
      for (kv::LayerPayload& p : b.layers) p.Seal();
    }
  }
  std::vector<kv::BlockKey> keys;
  for (const kv::Block& b : blocks) keys.push_back(b.key);
  kv::BlockStore::Options o;
  o.capacity_bytes = 1 << 20;
  o.max_blocks = 16;
  o.max_layer_bytes = 1 << 16;
  auto store = kv::BlockStore::Create(o);
  if (!store.ok()) __builtin_trap();
  if (!(*store)->Put(layout, std::move(blocks)).ok()) return 0;
  (void)(*store)->Lookup(layout, keys);
  auto got = (*store)->Get(layout, keys);
  if (!got.ok()) return 0;
  // A worker of the fuzz shapes reads what it got when the layout is its.
  const std::vector<latentkv::worker::LayerKvShape> shapes = lf::KvShapes();
  const auto dtype = latentkv::ParseDType(layout.dtype);
  if (!dtype.has_value() || !latentkv::IsKvDType(*dtype) ||
      layout.num_layers != shapes.size() ||
      layout.num_kv_heads != static_cast<uint32_t>(lf::kKvHeads)) {
    return 0;
  }
  std::vector<kv::Block> read;
  for (const auto& b : *got) read.push_back(*b);
  (void)latentkv::worker::SnapshotFromBlocks(
      shapes, *dtype, static_cast<int32_t>(layout.block_tokens), read);
  return 0;
}
