#include "kvstore/proto_convert.h"

namespace latentkv::kvstore {

namespace pb = ::latentkv::v1;

void ToProto(const KvLayout& in, pb::KvLayout* out) {
  out->set_model_id(in.model_id);
  out->set_num_layers(in.num_layers);
  out->set_num_kv_heads(in.num_kv_heads);
  out->mutable_d_qk()->Assign(in.d_qk.begin(), in.d_qk.end());
  out->mutable_d_vo()->Assign(in.d_vo.begin(), in.d_vo.end());
  out->set_dtype(in.dtype);
  out->set_block_tokens(in.block_tokens);
  out->set_codec(in.codec);
  out->set_tp_size(in.tp_size);
  out->set_tp_rank(in.tp_rank);
  out->mutable_nope_dims()->Assign(in.nope_dims.begin(), in.nope_dims.end());
}

KvLayout FromProto(const pb::KvLayout& in) {
  KvLayout l;
  l.model_id = in.model_id();
  l.num_layers = in.num_layers();
  l.num_kv_heads = in.num_kv_heads();
  l.d_qk.assign(in.d_qk().begin(), in.d_qk().end());
  l.d_vo.assign(in.d_vo().begin(), in.d_vo().end());
  l.dtype = in.dtype();
  l.block_tokens = in.block_tokens();
  l.codec = in.codec();
  l.tp_size = in.tp_size();
  l.tp_rank = in.tp_rank();
  // Canonical form: all-zero (every key channel rotary) is the empty list.
  for (uint32_t d : in.nope_dims()) {
    if (d != 0) {
      l.nope_dims.assign(in.nope_dims().begin(), in.nope_dims().end());
      break;
    }
  }
  return l;
}

void ToProto(const Block& in, pb::KvBlock* out) {
  out->set_key(in.key);
  out->set_parent_key(in.parent);
  out->mutable_token_ids()->Assign(in.tokens.begin(), in.tokens.end());
  out->mutable_layers()->Reserve(static_cast<int>(in.layers.size()));
  for (const LayerPayload& l : in.layers) {
    pb::LayerPayload* p = out->add_layers();
    p->set_layer(l.layer);
    p->set_present(l.present);
    p->set_data(l.data);
    p->set_checksum(l.checksum);
  }
  out->set_head_begin(in.head_begin);
  out->set_head_end(in.head_end);
}

Block FromProto(const pb::KvBlock& in) {
  Block b;
  b.key = in.key();
  b.parent = in.parent_key();
  b.tokens.assign(in.token_ids().begin(), in.token_ids().end());
  b.layers.reserve(in.layers_size());
  for (const pb::LayerPayload& p : in.layers()) {
    b.layers.push_back(
        LayerPayload{p.layer(), p.present(), p.data(), p.checksum()});
  }
  b.head_begin = in.head_begin();
  b.head_end = in.head_end();
  return b;
}

void ToProto(const Event& in, pb::KvEvent* out) {
  out->set_seq(in.seq);
  out->set_kind(in.kind == EventKind::kStored ? pb::KvEvent::STORED
                                              : pb::KvEvent::REMOVED);
  out->set_key(in.key);
  out->set_parent_key(in.parent);
  out->set_bytes(static_cast<uint64_t>(in.bytes));
}

Event FromProto(const pb::KvEvent& in) {
  Event e;
  e.seq = in.seq();
  e.kind = in.kind() == pb::KvEvent::REMOVED ? EventKind::kRemoved
                                             : EventKind::kStored;
  e.key = in.key();
  e.parent = in.parent_key();
  e.bytes = static_cast<int64_t>(in.bytes());
  return e;
}

void ToProto(const StoreSnapshot& in, pb::SnapshotResponse* out) {
  out->set_seq(in.seq);
  out->set_epoch(in.epoch);
  out->mutable_blocks()->Reserve(static_cast<int>(in.blocks.size()));
  for (const SnapshotEntry& e : in.blocks) {
    pb::SnapshotEntry* p = out->add_blocks();
    p->set_key(e.key);
    p->set_parent_key(e.parent);
    p->set_bytes(static_cast<uint64_t>(e.bytes));
  }
  if (in.layout) ToProto(*in.layout, out->mutable_layout());
  out->set_bytes_used(static_cast<uint64_t>(in.bytes_used));
  out->set_capacity_bytes(static_cast<uint64_t>(in.capacity_bytes));
}

StoreSnapshot FromProto(const pb::SnapshotResponse& in) {
  StoreSnapshot s;
  s.seq = in.seq();
  s.epoch = in.epoch();
  s.blocks.reserve(in.blocks_size());
  for (const pb::SnapshotEntry& p : in.blocks()) {
    s.blocks.push_back(SnapshotEntry{p.key(), p.parent_key(),
                                     static_cast<int64_t>(p.bytes())});
  }
  if (in.has_layout()) s.layout = FromProto(in.layout());
  s.bytes_used = static_cast<int64_t>(in.bytes_used());
  s.capacity_bytes = static_cast<int64_t>(in.capacity_bytes());
  return s;
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

}  // namespace latentkv::kvstore
