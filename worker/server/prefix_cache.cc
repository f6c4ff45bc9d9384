#include "worker/server/prefix_cache.h"

#include <cstdio>

#include "kvstore/chain_key.h"

namespace latentkv::worker {

StorePrefixCache::StorePrefixCache(const PrefixCacheOptions& options,
                                   std::vector<LayerKvShape> shapes)
    : options_(options), shapes_(std::move(shapes)) {
  layout_.model_id = options.model_id;
  layout_.num_layers = static_cast<uint32_t>(shapes_.size());
  layout_.num_kv_heads = shapes_.empty() ? 0 : shapes_[0].n_kv_heads;
  for (const LayerKvShape& s : shapes_) {
    layout_.d_qk.push_back(s.d_qk);
    layout_.d_vo.push_back(s.d_vo);
  }
  layout_.dtype = std::string(DTypeName(options.dtype));
  layout_.block_tokens = options.block_tokens;
  layout_.codec = "rows";
  client_ = kvstore::KvStoreClient::Connect(options.address);
}

std::shared_ptr<const KvSnapshot> StorePrefixCache::Fetch(
    const std::vector<int32_t>& prompt, int64_t* tokens) {
  *tokens = 0;
  const int64_t B = options_.block_tokens;
  const int64_t usable = (static_cast<int64_t>(prompt.size()) - 1) / B;
  if (usable <= 0) return nullptr;
  ++lookups_;
  std::vector<kvstore::BlockKey> keys = kvstore::PrefixKeys(
      absl::MakeConstSpan(prompt.data(), usable * B), options_.block_tokens);
  auto hits = client_->Lookup(layout_, keys);
  if (!hits.ok()) {
    if (!absl::IsFailedPrecondition(hits.status())) ++errors_;
    return nullptr;
  }
  if (hits->num_hits == 0) return nullptr;
  keys.resize(hits->num_hits);
  auto blocks = client_->Get(layout_, keys);
  if (!blocks.ok() || blocks->empty()) {
    ++errors_;
    return nullptr;
  }
  auto snap = std::make_shared<KvSnapshot>();
  snap->shapes = shapes_;
  snap->dtype = options_.dtype;
  snap->rows.resize(shapes_.size());
  for (size_t l = 0; l < shapes_.size(); ++l) {
    snap->rows[l].resize(shapes_[l].n_kv_heads);
  }
  for (const kvstore::Block& b : *blocks) {
    for (const kvstore::LayerPayload& p : b.layers) {
      if (p.layer >= shapes_.size()) continue;
      const int64_t head_bytes =
          B * KvSnapshot::RowBytes(shapes_[p.layer], options_.dtype);
      if (!p.present || !p.Intact() ||
          static_cast<int64_t>(p.data.size()) !=
              head_bytes * shapes_[p.layer].n_kv_heads) {
        ++errors_;  // not a full-cache block of this layout
        return nullptr;
      }
      for (int32_t h = 0; h < shapes_[p.layer].n_kv_heads; ++h) {
        snap->rows[p.layer][h].append(p.data, h * head_bytes, head_bytes);
      }
    }
  }
  *tokens = static_cast<int64_t>(blocks->size()) * B;
  for (size_t l = 0; l < shapes_.size(); ++l) {
    for (const std::string& r : snap->rows[l]) {
      if (static_cast<int64_t>(r.size()) !=
          *tokens * KvSnapshot::RowBytes(shapes_[l], options_.dtype)) {
        ++errors_;  // a layer missing from some block
        *tokens = 0;
        return nullptr;
      }
    }
  }
  if (!snap->CheckRows().ok()) {
    ++errors_;  // corrupt or forged payloads: recompute instead
    *tokens = 0;
    return nullptr;
  }
  hit_tokens_ += *tokens;
  return snap;
}

void StorePrefixCache::Publish(const std::vector<int32_t>& tokens,
                               const KvSnapshot& kv) {
  const int64_t B = options_.block_tokens;
  if (kv.rows.empty() || kv.rows[0].empty()) return;
  const int64_t rows = static_cast<int64_t>(kv.rows[0][0].size()) /
                       KvSnapshot::RowBytes(shapes_[0], options_.dtype);
  const int64_t n_blocks =
      std::min<int64_t>(rows, static_cast<int64_t>(tokens.size())) / B;
  if (n_blocks <= 0) return;
  const std::vector<kvstore::BlockKey> keys = kvstore::PrefixKeys(
      absl::MakeConstSpan(tokens.data(), n_blocks * B), options_.block_tokens);
  std::vector<kvstore::Block> blocks(n_blocks);
  for (int64_t j = 0; j < n_blocks; ++j) {
    kvstore::Block& b = blocks[j];
    b.key = keys[j];
    b.parent = j == 0 ? 0 : keys[j - 1];
    b.tokens.assign(tokens.begin() + j * B, tokens.begin() + (j + 1) * B);
    for (size_t l = 0; l < shapes_.size(); ++l) {
      kvstore::LayerPayload p;
      p.layer = static_cast<uint32_t>(l);
      p.present = true;
      const int64_t rb = KvSnapshot::RowBytes(shapes_[l], options_.dtype);
      for (const std::string& r : kv.rows[l]) {
        if (static_cast<int64_t>(r.size()) < (j + 1) * B * rb) return;
        p.data.append(r, j * B * rb, B * rb);
      }
      p.Seal();
      b.layers.push_back(std::move(p));
    }
  }
  auto put = client_->Put(layout_, blocks);
  if (!put.ok()) {
    ++errors_;
    std::fprintf(stderr, "latentkv-worker: kvstore put failed: %s\n",
                 put.status().ToString().c_str());
    return;
  }
  published_ += put->stored;
}

}  // namespace latentkv::worker
