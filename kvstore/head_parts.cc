#include "kvstore/head_parts.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::kvstore {
namespace {

// The end of `b`'s range, 0..0 spelled out.
uint32_t RangeEnd(const Block& b, uint32_t num_kv_heads) {
  return b.head_begin == 0 && b.head_end == 0 ? num_kv_heads : b.head_end;
}

}  // namespace

bool IsEveryHead(uint32_t begin, uint32_t end, uint32_t num_kv_heads) {
  return begin == 0 && (end == 0 || end == num_kv_heads);
}

absl::Status CheckHeadRange(uint32_t begin, uint32_t end, uint32_t num_kv_heads,
                            const std::string& where) {
  if ((begin == 0 && end == 0) || (begin < end && end <= num_kv_heads)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": KV heads [", begin, ", ", end,
                   ") are not a range of the layout's ", num_kv_heads));
}

bool HoldsAllHeads(const Block& b, uint32_t num_kv_heads) {
  return IsEveryHead(b.head_begin, b.head_end, num_kv_heads);
}

absl::Status ValidateHeadRange(const Block& b, uint32_t num_kv_heads,
                               const std::string& where) {
  if (absl::Status s =
          CheckHeadRange(b.head_begin, b.head_end, num_kv_heads, where);
      !s.ok()) {
    return s;
  }
  if (b.head_begin == 0 && b.head_end == 0) return absl::OkStatus();
  const uint32_t n = b.head_end - b.head_begin;
  for (const LayerPayload& l : b.layers) {
    if (l.present && l.data.size() % n != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": layer ", l.layer, " payload of ", l.data.size(),
          " bytes does not split into ", n, " equal KV-head segments"));
    }
  }
  return absl::OkStatus();
}

Block SliceHeads(const Block& whole, uint32_t num_kv_heads, uint32_t begin,
                 uint32_t end) {
  Block out;
  out.key = whole.key;
  out.parent = whole.parent;
  out.tokens = whole.tokens;
  out.head_begin = begin;
  out.head_end = end;
  for (const LayerPayload& l : whole.layers) {
    LayerPayload p;
    p.layer = l.layer;
    p.present = l.present;
    if (l.present) {
      const size_t segment = l.data.size() / num_kv_heads;
      p.data.assign(l.data, begin * segment, (end - begin) * segment);
    }
    p.Seal();
    out.layers.push_back(std::move(p));
  }
  return out;
}

PartialBlock::PartialBlock(const Block& first, uint32_t num_layers,
                           uint32_t num_kv_heads, absl::Time now)
    : key_(first.key),
      parent_(first.parent),
      tokens_(first.tokens),
      layers_(num_layers),
      have_(num_kv_heads, false),
      missing_(num_kv_heads),
      since_(now) {
  for (Layer& l : layers_) l.heads.resize(num_kv_heads);
}

absl::Status PartialBlock::Add(const Block& part, int64_t* added) {
  *added = 0;
  const uint32_t num_kv_heads = static_cast<uint32_t>(have_.size());
  const uint32_t begin = part.head_begin;
  const uint32_t end = RangeEnd(part, num_kv_heads);
  const uint32_t n = end - begin;
  // What this part says of each layer: absent (unlisted or not present) or
  // present with a per-head segment size. Checked against earlier parts
  // before anything is taken.
  std::vector<const LayerPayload*> payload(layers_.size(), nullptr);
  for (const LayerPayload& l : part.layers) {
    if (l.present) payload[l.layer] = &l;
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& have = layers_[i];
    const int state = payload[i] != nullptr ? 1 : 0;
    const int64_t segment =
        state == 1 ? static_cast<int64_t>(payload[i]->data.size() / n) : -1;
    if (have.state >= 0 && (have.state != state || have.segment != segment)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "block ", key_, ": KV heads [", begin, ", ", end, ") disagree on ",
          "layer ", i, " with the heads already stored (",
          state == 1 ? absl::StrCat(segment, " bytes per head")
                     : std::string("absent"),
          " vs ",
          have.state == 1 ? absl::StrCat(have.segment, " bytes per head")
                          : std::string("absent"),
          ")"));
    }
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& have = layers_[i];
    have.state = payload[i] != nullptr ? 1 : 0;
    have.segment = have.state == 1
                       ? static_cast<int64_t>(payload[i]->data.size() / n)
                       : -1;
  }
  for (uint32_t h = begin; h < end; ++h) {
    if (have_[h]) continue;
    have_[h] = true;
    --missing_;
    for (size_t i = 0; i < layers_.size(); ++i) {
      if (payload[i] == nullptr) continue;
      const size_t seg = static_cast<size_t>(layers_[i].segment);
      layers_[i].heads[h].assign(payload[i]->data, (h - begin) * seg, seg);
      *added += static_cast<int64_t>(seg);
    }
  }
  bytes_ += *added;
  return absl::OkStatus();
}

bool PartialBlock::CompletedBy(const Block& part) const {
  const uint32_t num_kv_heads = static_cast<uint32_t>(have_.size());
  const uint32_t begin = part.head_begin;
  const uint32_t end = RangeEnd(part, num_kv_heads);
  for (uint32_t h = 0; h < num_kv_heads; ++h) {
    if (!have_[h] && (h < begin || h >= end)) return false;
  }
  return true;
}

Block PartialBlock::Assemble() const {
  Block b;
  b.key = key_;
  b.parent = parent_;
  b.tokens = tokens_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].state != 1) continue;
    LayerPayload p;
    p.layer = static_cast<uint32_t>(i);
    p.present = true;
    p.data.reserve(static_cast<size_t>(layers_[i].segment) *
                   layers_[i].heads.size());
    for (const std::string& h : layers_[i].heads) p.data += h;
    p.Seal();
    b.layers.push_back(std::move(p));
  }
  return b;
}

}  // namespace latentkv::kvstore
