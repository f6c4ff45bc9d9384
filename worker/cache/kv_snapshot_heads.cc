#include "worker/cache/kv_snapshot_heads.h"

#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {
namespace {

// A layer's query window: int32 count, int32 next, f32 q [count, n_heads, d],
// int32 positions [count].
struct Window {
  int32_t count = 0, next = 0;
  const char* q = nullptr;    // [count, n_heads, d] f32
  const char* pos = nullptr;  // [count] int32
};

absl::StatusOr<Window> ParseWindow(const std::string& b, int64_t n_heads,
                                   int32_t d, int32_t layer) {
  Window w;
  if (b.size() >= 8) {
    std::memcpy(&w.count, b.data(), 4);
    std::memcpy(&w.next, b.data() + 4, 4);
  }
  const int64_t row = 4 * n_heads * d;
  if (b.size() < 8 || w.count < 0 ||
      static_cast<int64_t>(b.size()) != 8 + (row + 4) * w.count) {
    return absl::InvalidArgumentError(
        absl::StrCat("query window of layer ", layer, " (", b.size(),
                     " bytes) does not fit ", n_heads, " heads of ", d));
  }
  w.q = b.data() + 8;
  w.pos = w.q + row * w.count;
  return w;
}

absl::Status CheckHeads(const KvSnapshot& s, int32_t l) {
  const size_t n = static_cast<size_t>(s.shapes[l].n_kv_heads);
  const bool cb = s.codebooks.empty() || s.codebooks[l].size() == n;
  if (s.rows[l].size() != n || !cb) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV snapshot layer ", l, " does not hold its ", n, " KV heads"));
  }
  return absl::OkStatus();
}

absl::Status CheckLayers(const KvSnapshot& s) {
  const size_t layers = s.shapes.size();
  if (s.rows.size() != layers ||
      (!s.codebooks.empty() && s.codebooks.size() != layers) ||
      (!s.windows.empty() && s.windows.size() != layers)) {
    return absl::InvalidArgumentError(
        "KV snapshot parts do not cover its layers");
  }
  return absl::OkStatus();
}

// A snapshot of `s`'s dtype, shapes and kinds of state, holding nothing.
KvSnapshot EmptyLike(const KvSnapshot& s) {
  KvSnapshot out;
  out.dtype = s.dtype;
  out.shapes = s.shapes;
  out.rows.resize(s.shapes.size());
  if (!s.codebooks.empty()) out.codebooks.resize(s.shapes.size());
  if (!s.windows.empty()) out.windows.resize(s.shapes.size());
  return out;
}

// Layer l's KV heads [begin, end) of `s` (checked: CheckHeads, and the
// range within the layer's heads) into `out` (EmptyLike(s)): rows, codebook
// entries, and of each window entry the query heads of those KV heads.
absl::Status SliceLayer(const KvSnapshot& s, int32_t l, int32_t begin,
                        int32_t end, int32_t q_per_kv, KvSnapshot* out) {
  if (absl::Status st = CheckHeads(s, l); !st.ok()) return st;
  const LayerKvShape& shape = s.shapes[l];
  if (begin < 0 || begin >= end || end > shape.n_kv_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV heads [", begin, ", ", end, ") are not within ",
                     "layer ", l, "'s ", shape.n_kv_heads));
  }
  out->shapes[l].n_kv_heads = end - begin;
  out->rows[l].assign(s.rows[l].begin() + begin, s.rows[l].begin() + end);
  if (!s.codebooks.empty()) {
    out->codebooks[l].assign(s.codebooks[l].begin() + begin,
                             s.codebooks[l].begin() + end);
  }
  if (s.windows.empty() || s.windows[l].empty()) return absl::OkStatus();
  auto w = ParseWindow(s.windows[l], int64_t{shape.n_kv_heads} * q_per_kv,
                       shape.d_qk, l);
  if (!w.ok()) return w.status();
  // Bytes of one KV head's query heads of one window entry, and of all.
  const int64_t head_q = 4 * int64_t{q_per_kv} * shape.d_qk;
  const int64_t all_q = head_q * shape.n_kv_heads;
  std::string& b = out->windows[l];
  b.reserve(8 + (head_q * (end - begin) + 4) * w->count);
  b.append(s.windows[l].data(), 8);
  for (int32_t i = 0; i < w->count; ++i) {
    b.append(w->q + i * all_q + begin * head_q, head_q * (end - begin));
  }
  b.append(w->pos, 4 * static_cast<size_t>(w->count));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<KvSnapshot>> SplitHeads(const KvSnapshot& full,
                                                   int32_t parts,
                                                   int32_t q_per_kv) {
  if (parts < 1 || q_per_kv < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot split KV heads ", parts, " ways with ", q_per_kv,
                     " query heads each"));
  }
  if (absl::Status s = CheckLayers(full); !s.ok()) return s;
  std::vector<KvSnapshot> out(parts, EmptyLike(full));
  for (int32_t l = 0; l < static_cast<int32_t>(full.shapes.size()); ++l) {
    const int32_t n = full.shapes[l].n_kv_heads;
    if (n % parts != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, "'s ", n, " KV heads do not split into ",
                       parts, " ranks"));
    }
    const int32_t per = n / parts;
    for (int32_t r = 0; r < parts; ++r) {
      if (absl::Status s =
              SliceLayer(full, l, r * per, (r + 1) * per, q_per_kv, &out[r]);
          !s.ok()) {
        return s;
      }
    }
  }
  return out;
}

absl::StatusOr<KvSnapshot> SliceHeads(const KvSnapshot& s, int32_t begin,
                                      int32_t end, int32_t q_per_kv) {
  if (q_per_kv < 1) return absl::InvalidArgumentError("q_per_kv must be >= 1");
  if (absl::Status st = CheckLayers(s); !st.ok()) return st;
  KvSnapshot out = EmptyLike(s);
  for (int32_t l = 0; l < static_cast<int32_t>(s.shapes.size()); ++l) {
    if (absl::Status st = SliceLayer(s, l, begin, end, q_per_kv, &out);
        !st.ok()) {
      return st;
    }
  }
  return out;
}

bool HeadsHoldEqualTokens(const KvSnapshot& s) {
  if (CheckLayers(s).ok() == false) return false;
  for (int32_t l = 0; l < static_cast<int32_t>(s.rows.size()); ++l) {
    if (!CheckHeads(s, l).ok()) return false;
    for (int32_t h = 1; h < s.shapes[l].n_kv_heads; ++h) {
      if (s.tokens(l, h) != s.tokens(l, 0)) return false;
    }
  }
  return true;
}

absl::StatusOr<KvSnapshot> JoinHeads(const std::vector<KvSnapshot>& parts,
                                     int32_t q_per_kv) {
  if (parts.empty() || q_per_kv < 1) {
    return absl::InvalidArgumentError("nothing to join");
  }
  const KvSnapshot& first = parts[0];
  const int32_t layers = static_cast<int32_t>(first.shapes.size());
  bool codebooks = false;
  for (const KvSnapshot& p : parts) {
    if (absl::Status s = CheckLayers(p); !s.ok()) return s;
    if (p.shapes.size() != first.shapes.size() || p.dtype != first.dtype ||
        p.windows.empty() != first.windows.empty()) {
      return absl::InvalidArgumentError(
          "KV snapshot parts differ in layers, dtype or residency state");
    }
    codebooks = codebooks || !p.codebooks.empty();
  }
  const int32_t n = static_cast<int32_t>(parts.size());
  KvSnapshot out;
  out.dtype = first.dtype;
  out.shapes = first.shapes;
  out.rows.resize(layers);
  if (codebooks) out.codebooks.resize(layers);
  if (!first.windows.empty()) out.windows.resize(layers);
  for (int32_t l = 0; l < layers; ++l) {
    const LayerKvShape& shape = first.shapes[l];
    out.shapes[l].n_kv_heads = 0;
    std::vector<Window> wins(n);
    for (int32_t r = 0; r < n; ++r) {
      const KvSnapshot& p = parts[r];
      const LayerKvShape& s = p.shapes[l];
      out.shapes[l].n_kv_heads += s.n_kv_heads;
      if (s.d_qk != shape.d_qk || s.d_vo != shape.d_vo ||
          s.nope_dims != shape.nope_dims) {
        return absl::InvalidArgumentError(
            absl::StrCat("KV snapshot parts differ in the shape of layer ", l));
      }
      if (absl::Status st = CheckHeads(p, l); !st.ok()) return st;
      out.rows[l].insert(out.rows[l].end(), p.rows[l].begin(), p.rows[l].end());
      if (codebooks) {
        if (p.codebooks.empty()) {
          out.codebooks[l].resize(out.codebooks[l].size() + s.n_kv_heads);
        } else {
          out.codebooks[l].insert(out.codebooks[l].end(),
                                  p.codebooks[l].begin(), p.codebooks[l].end());
        }
      }
      if (p.windows.empty() || p.windows[l].empty()) continue;
      auto w = ParseWindow(p.windows[l], int64_t{s.n_kv_heads} * q_per_kv,
                           s.d_qk, l);
      if (!w.ok()) return w.status();
      wins[r] = *w;
    }
    if (first.windows.empty()) continue;
    const Window& w0 = wins[0];
    for (int32_t r = 0; r < n; ++r) {
      const Window& w = wins[r];
      if (w.count != w0.count || w.next != w0.next ||
          (w.count > 0 && std::memcmp(w.pos, w0.pos, 4 * w.count) != 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the ranks' query windows of layer ", l, " disagree"));
      }
    }
    if (w0.count == 0) continue;
    const int64_t head_q = 4 * int64_t{q_per_kv} * shape.d_qk;
    std::string& b = out.windows[l];
    b.reserve(8 + (head_q * out.shapes[l].n_kv_heads + 4) * w0.count);
    b.append(parts[0].windows[l].data(), 8);
    for (int32_t i = 0; i < w0.count; ++i) {
      for (int32_t r = 0; r < n; ++r) {
        const int64_t part_q = head_q * parts[r].shapes[l].n_kv_heads;
        b.append(wins[r].q + i * part_q, part_q);
      }
    }
    b.append(w0.pos, 4 * static_cast<size_t>(w0.count));
  }
  return out;
}

}  // namespace latentkv::worker
