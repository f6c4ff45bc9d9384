#include "worker/server/prefix_cache.h"

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kvstore/chain_key.h"
#include "worker/server/store_rows.h"

namespace latentkv::worker {

kvstore::KvLayout ShapesLayout(const std::vector<LayerKvShape>& shapes) {
  kvstore::KvLayout layout;
  layout.num_layers = static_cast<uint32_t>(shapes.size());
  layout.num_kv_heads = shapes.empty() ? 0 : shapes[0].n_kv_heads;
  bool partial = false;
  for (const LayerKvShape& s : shapes) {
    layout.d_qk.push_back(s.d_qk);
    layout.d_vo.push_back(s.d_vo);
    partial = partial || s.nope_dims != 0;
  }
  if (partial) {
    for (const LayerKvShape& s : shapes)
      layout.nope_dims.push_back(s.nope_dims);
  }
  return layout;
}

kvstore::KvLayout StoreLayout(const PrefixCacheOptions& options,
                              const std::vector<LayerKvShape>& shapes) {
  kvstore::KvLayout layout = ShapesLayout(shapes);
  layout.model_id = options.model_id;
  layout.dtype = std::string(DTypeName(options.dtype));
  layout.block_tokens = options.block_tokens;
  layout.codec = "rows";
  return layout;
}

std::string StoreModelId(const std::string& model_path) {
  return std::filesystem::path(model_path).filename().string();
}

namespace {

// `group` with each layer's KV heads cut to [begin, end) (0, 0: all).
std::vector<LayerKvShape> RankShapes(std::vector<LayerKvShape> group,
                                     int32_t begin, int32_t end) {
  if (begin == 0 && end == 0) return group;
  for (LayerKvShape& s : group) s.n_kv_heads = end - begin;
  return group;
}

}  // namespace

StorePrefixCache::StorePrefixCache(
    const PrefixCacheOptions& options,
    const std::vector<LayerKvShape>& group_shapes)
    : options_(options),
      shapes_(RankShapes(group_shapes, options.head_begin, options.head_end)),
      layout_(StoreLayout(options, group_shapes)) {
  client_ = kvstore::KvStoreClient::Connect(options.address);
  thread_ = std::thread([this] { PublishLoop(); });
}

StorePrefixCache::~StorePrefixCache() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

std::shared_ptr<const KvSnapshot> StorePrefixCache::Fetch(
    const std::vector<int32_t>& prompt, int64_t* tokens,
    std::vector<uint64_t>* keys_out) {
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
  auto snap = GetRows(keys, 1);
  if (!snap.ok()) {
    // (Evicted since the lookup counts too: GetRows counted the others.)
    if (absl::IsNotFound(snap.status())) ++errors_;
    return nullptr;
  }
  *tokens = (*snap)->tokens(0, 0);
  hit_tokens_ += *tokens;
  if (keys_out != nullptr) {
    keys_out->assign(keys.begin(), keys.begin() + *tokens / B);
  }
  return *std::move(snap);
}

absl::StatusOr<std::shared_ptr<const KvSnapshot>> StorePrefixCache::GetRows(
    absl::Span<const uint64_t> keys, size_t want) {
  auto blocks =
      client_->Get(layout_, keys, options_.head_begin, options_.head_end);
  if (!blocks.ok()) {
    ++errors_;
    return blocks.status();
  }
  if (blocks->size() < want) {
    return absl::NotFoundError(
        absl::StrCat(keys.size() - blocks->size(), " of ", keys.size(),
                     " stored blocks are no longer resident"));
  }
  auto snap = SnapshotFromBlocks(shapes_, options_.dtype, options_.block_tokens,
                                 *blocks);
  // Not full-cache blocks of this layout, corrupt or forged.
  if (!snap.ok()) ++errors_;
  return snap;
}

absl::StatusOr<KvSnapshot> StorePrefixCache::FetchBlocks(
    absl::Span<const uint64_t> keys) {
  auto snap = GetRows(keys, keys.size());
  if (!snap.ok()) return snap.status();
  hit_tokens_ += static_cast<int64_t>(keys.size()) * options_.block_tokens;
  return KvSnapshot(**snap);
}

void StorePrefixCache::PublishAsync(std::vector<int32_t> tokens,
                                    KvSnapshot kv) {
  Job job;
  job.bytes = kv.bytes();
  job.tokens = std::move(tokens);
  job.kv = std::move(kv);
  absl::MutexLock lock(&mu_);
  if (queued_bytes_ + job.bytes > options_.max_queued_bytes) {
    ++dropped_;  // the store is slower than the engine: skip this one
    return;
  }
  queued_bytes_ += job.bytes;
  queue_.push_back(std::move(job));
}

void StorePrefixCache::PublishLoop() {
  while (true) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](StorePrefixCache* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
            return c->stop_ || !c->queue_.empty();
          },
          this));
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Publish(job.tokens, job.kv);
    absl::MutexLock lock(&mu_);
    queued_bytes_ -= job.bytes;
    busy_ = false;
  }
}

void StorePrefixCache::Flush() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](StorePrefixCache* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
        return c->stop_ || (c->queue_.empty() && !c->busy_);
      },
      this));
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
    b.head_begin = static_cast<uint32_t>(options_.head_begin);
    b.head_end = static_cast<uint32_t>(options_.head_end);
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
  published_ += put->stored + put->pending;  // whole blocks or head parts
}

void UseStorePrefix(StorePrefixCache& cache, int tp_size,
                    GenerationRequest* g) {
  int64_t hit = 0;
  std::vector<uint64_t> keys;
  g->import_kv = cache.Fetch(g->prompt, &hit, tp_size > 1 ? &keys : nullptr);
  if (g->import_kv != nullptr) g->import_store_keys = std::move(keys);
  g->import_first_token = -1;
  g->publish_kv = true;
}

}  // namespace latentkv::worker
