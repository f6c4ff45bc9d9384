// TpKv: a rank's KV part survives the wire (rows, codebook blobs, windows,
// and their absence); an error part, garbage and a part of the wrong shape
// are refused with the codes ParseTpKv documents.
#include "worker/tp/tp_kv.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "latentkv/v1/worker.pb.h"

namespace latentkv::worker {
namespace {

namespace pb = ::latentkv::v1;

std::vector<LayerKvShape> Shapes() { return {{2, 4, 3}, {2, 5, 3}}; }

KvSnapshot Part(bool state) {
  KvSnapshot s;
  s.shapes = Shapes();
  s.dtype = DType::kBF16;
  s.rows = {{"row a", ""}, {"row c", "row d"}};
  if (state) {
    s.codebooks = {{"", "cb"}, {"", ""}};
    s.windows = {"window 0", ""};
  }
  return s;
}

TEST(TpKvTest, RoundTrip) {
  for (bool state : {false, true}) {
    const KvSnapshot in = Part(state);
    auto out = ParseTpKv(SerializeTpKv(in), Shapes(), DType::kBF16);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->dtype, DType::kBF16);
    EXPECT_EQ(out->rows, in.rows);
    EXPECT_EQ(out->codebooks, in.codebooks);
    EXPECT_EQ(out->windows, in.windows);
    EXPECT_EQ(out->has_residency_state(), state);
  }
}

TEST(TpKvTest, RefusesErrorsGarbageAndWrongShapes) {
  auto err = ParseTpKv(SerializeTpKvError("rank 1 holds no KV for x"), Shapes(),
                       DType::kF32);
  EXPECT_TRUE(absl::IsInternal(err.status())) << err.status();
  EXPECT_NE(err.status().message().find("holds no KV"), std::string::npos);
  EXPECT_TRUE(absl::IsDataLoss(
      ParseTpKv(std::string("\xff\xff\xff", 3), Shapes(), DType::kF32)
          .status()));
  const std::string wire = SerializeTpKv(Part(true));
  EXPECT_TRUE(ParseTpKv(wire, Shapes(), DType::kBF16).ok());
  // A rank configured differently (KV dtype, layers, heads, dims).
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ParseTpKv(wire, Shapes(), DType::kF32).status()));
  std::vector<LayerKvShape> one_layer = {Shapes()[0]};
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ParseTpKv(wire, one_layer, DType::kBF16).status()));
  std::vector<LayerKvShape> three_heads = Shapes();
  three_heads[1].n_kv_heads = 3;
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ParseTpKv(wire, three_heads, DType::kBF16).status()));
  std::vector<LayerKvShape> wider = Shapes();
  wider[0].d_vo = 4;
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ParseTpKv(wire, wider, DType::kBF16).status()));
  // The layout matches but the rows of a layer are missing.
  pb::TpKv cut;
  ASSERT_TRUE(cut.ParseFromString(wire));
  cut.mutable_layers()->RemoveLast();
  EXPECT_TRUE(absl::IsDataLoss(
      ParseTpKv(cut.SerializeAsString(), Shapes(), DType::kBF16).status()));
  cut.ParseFromString(wire);
  cut.mutable_layers(1)->mutable_head_rows()->RemoveLast();
  EXPECT_TRUE(absl::IsDataLoss(
      ParseTpKv(cut.SerializeAsString(), Shapes(), DType::kBF16).status()));
}

}  // namespace
}  // namespace latentkv::worker
