// Writes the seed inputs of the worker-side targets, built with the real
// encoders (KvSnapshot rows, CodebookStore blobs, kvstore protos), into
// <dir>/<target>/: fuzz_kv_transfer, fuzz_codebook, fuzz_kvstore; with
// <shared> (../shared), also the model-file seeds (seedgen_model.h).
// Usage: seedgen <dir> [<shared>]
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kvstore/chain_key.h"
#include "kvstore/proto_convert.h"
#include "tests/fuzz/frames.h"
#include "tests/fuzz/kv_shapes.h"
#include "tests/fuzz/seedgen_model.h"
#include "worker/server/prefill_assembler.h"

namespace lf = latentkv::fuzz;
namespace lw = latentkv::worker;
namespace pb = latentkv::v1;

namespace {

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// `n` f32 rows of one head: position p, K [kDim], V [kDim].
std::string Rows(int n, float scale) {
  std::string out;
  for (int p = 0; p < n; ++p) {
    Put<int32_t>(&out, p);
    for (int i = 0; i < 2 * lf::kDim; ++i) Put<float>(&out, scale * (p + i));
  }
  return out;
}

// One K and one V unit codeword, `records` tokens using them.
std::string CodebookBlob(int records, int first_pos) {
  std::string out;
  Put<int32_t>(&out, 1);
  Put<int32_t>(&out, 1);
  Put<int64_t>(&out, records);
  for (int i = 0; i < 2 * lf::kDim; ++i) Put<float>(&out, i % lf::kDim == 0);
  for (int r = 0; r < records; ++r) {
    Put<int32_t>(&out, first_pos + r);
    Put<int32_t>(&out, 0);
    Put<float>(&out, 1.5f);
    Put<int32_t>(&out, 0);
    Put<float>(&out, 0.5f);
  }
  return out;
}

// A full window of kWindow queries at positions 0..kWindow-1.
std::string Window() {
  std::string out;
  Put<int32_t>(&out, lf::kWindow);
  Put<int32_t>(&out, 0);
  for (int i = 0; i < lf::kWindow * lf::kHeads * lf::kDim; ++i) {
    Put<float>(&out, 0.1f * (i % 7));
  }
  for (int p = 0; p < lf::kWindow; ++p) Put<int32_t>(&out, p);
  return out;
}

std::string Stream(bool codebooks) {
  std::string out(1, '\0');  // f32
  pb::PrefillResponse first;
  *first.mutable_layout() = lf::TransferLayoutOf(latentkv::DType::kF32);
  first.set_first_token(7);
  lf::AppendFrame(first.SerializeAsString(), &out);
  for (int l = 0; l < lf::kLayers; ++l) {
    pb::PrefillResponse m;
    m.set_layer(l);
    for (int h = 0; h < lf::kKvHeads; ++h) {
      m.add_head_rows(Rows(codebooks && l == 0 ? 1 : 3, 0.25f * (h + 1)));
      if (codebooks && l == 0) m.add_head_codebooks(CodebookBlob(2, 1));
    }
    if (codebooks) m.set_window(Window());
    lf::AppendFrame(m.SerializeAsString(), &out);
  }
  return out;
}

std::string PutRequest() {
  pb::PutRequest req;
  latentkv::kvstore::KvLayout layout;
  layout.model_id = "fuzz";
  layout.num_layers = lf::kLayers;
  layout.num_kv_heads = lf::kKvHeads;
  layout.d_qk.assign(lf::kLayers, lf::kDim);
  layout.d_vo.assign(lf::kLayers, lf::kDim);
  layout.dtype = "f32";
  layout.block_tokens = lf::kBlockTokens;
  layout.codec = "rows";
  latentkv::kvstore::ToProto(layout, req.mutable_layout());
  latentkv::kvstore::BlockKey parent = 0;
  for (int j = 0; j < 2; ++j) {
    latentkv::kvstore::Block b;
    b.parent = parent;
    b.tokens = {10 + 2 * j, 11 + 2 * j};
    b.key = latentkv::kvstore::ChainKey(parent, b.tokens.data(), 2);
    parent = b.key;
    for (int l = 0; l < lf::kLayers; ++l) {
      latentkv::kvstore::LayerPayload p;
      p.layer = l;
      p.present = true;
      for (int h = 0; h < lf::kKvHeads; ++h) p.data += Rows(2, 0.5f + h);
      p.Seal();
      b.layers.push_back(p);
    }
    latentkv::kvstore::ToProto(b, req.add_blocks());
  }
  return std::string(1, '\0') + req.SerializeAsString();
}

void Write(const std::filesystem::path& dir, const std::string& name,
           const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s <dir> [<shared>]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  Write(dir / "fuzz_kv_transfer", "rows", Stream(false));
  Write(dir / "fuzz_kv_transfer", "codebooks_and_windows", Stream(true));
  Write(dir / "fuzz_codebook", "two_records", "\x05" + CodebookBlob(2, 3));
  Write(dir / "fuzz_codebook", "empty_header", "\x03" + CodebookBlob(0, 0));
  Write(dir / "fuzz_kvstore", "two_blocks", PutRequest());
  if (argc == 3) {
    const absl::Status s = latentkv::fuzz::WriteModelSeeds(dir, argv[2]);
    if (!s.ok()) {
      std::fprintf(stderr, "seedgen: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  return 0;
}
