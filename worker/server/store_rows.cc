#include "worker/server/store_rows.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::StatusOr<std::shared_ptr<const KvSnapshot>> SnapshotFromBlocks(
    const std::vector<LayerKvShape>& shapes, DType dtype, int32_t block_tokens,
    const std::vector<kvstore::Block>& blocks) {
  const int64_t B = block_tokens;
  auto snap = std::make_shared<KvSnapshot>();
  snap->shapes = shapes;
  snap->dtype = dtype;
  snap->rows.resize(shapes.size());
  for (size_t l = 0; l < shapes.size(); ++l) {
    snap->rows[l].resize(shapes[l].n_kv_heads);
  }
  for (const kvstore::Block& b : blocks) {
    for (const kvstore::LayerPayload& p : b.layers) {
      if (p.layer >= shapes.size()) continue;
      const int64_t head_bytes =
          B * KvSnapshot::RowBytes(shapes[p.layer], dtype);
      if (!p.present || !p.Intact() ||
          static_cast<int64_t>(p.data.size()) !=
              head_bytes * shapes[p.layer].n_kv_heads) {
        return absl::DataLossError(
            absl::StrCat("kvstore block ", b.key, " layer ", p.layer,
                         ": not a full-cache payload of this layout"));
      }
      for (int32_t h = 0; h < shapes[p.layer].n_kv_heads; ++h) {
        snap->rows[p.layer][h].append(p.data, h * head_bytes, head_bytes);
      }
    }
  }
  const int64_t tokens = static_cast<int64_t>(blocks.size()) * B;
  for (size_t l = 0; l < shapes.size(); ++l) {
    for (const std::string& r : snap->rows[l]) {
      if (static_cast<int64_t>(r.size()) !=
          tokens * KvSnapshot::RowBytes(shapes[l], dtype)) {
        return absl::DataLossError(
            absl::StrCat("kvstore blocks: layer ", l, " missing from a block"));
      }
    }
  }
  if (absl::Status rows = snap->CheckRows(); !rows.ok()) {
    return absl::DataLossError(rows.message());  // corrupt or forged
  }
  return std::shared_ptr<const KvSnapshot>(std::move(snap));
}

}  // namespace latentkv::worker
