#include "services/worker/model/phi_checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "services/worker/model/dtype.h"
#include "services/worker/model/phi_fused_weights.h"
#include "tests/unit/worker/model/safetensors_writer.h"

namespace phi::worker::model {
namespace {

using testing::F32Tensor;
using testing::RawTensor;

constexpr int kVocab = 12, kHidden = 8, kInter = 12, kHeads = 2;

// A one-layer Phi folder whose tensor k holds values 1000*k + i, so slices are checkable.
class PhiCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("phi_ck_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    config_ = {{"model_type", "phi"}, {"vocab_size", kVocab}, {"hidden_size", kHidden},
               {"intermediate_size", kInter}, {"num_hidden_layers", 1}, {"num_attention_heads", kHeads},
               {"max_position_embeddings", 64}, {"partial_rotary_factor", 0.5}, {"eos_token_id", 3}};
    std::ofstream(dir_ / "config.json") << config_.dump();
    PhiConfig c;
    c.vocab_size = kVocab;
    c.hidden_size = kHidden;
    c.intermediate_size = kInter;
    c.num_hidden_layers = 1;
    c.num_attention_heads = kHeads;
    int k = 0;
    for (const auto& spec : PhiTensorSpecs(c)) {
      int64_t n = 1;
      for (auto d : spec.shape) n *= d;
      std::vector<float> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = 1000.0f * k + static_cast<float>(i);
      tensors_.push_back(F32Tensor(spec.name, spec.shape, v));
      ++k;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Dir() const { return dir_.string(); }
  void WriteSingle() { testing::WriteSafetensors((dir_ / "model.safetensors").string(), tensors_); }
  const RawTensor& Tensor(const std::string& name) {
    for (const auto& t : tensors_)
      if (t.name == name) return t;
    ADD_FAILURE() << name;
    return tensors_[0];
  }
  float Value(const std::string& name, int64_t i) {
    float f;
    std::memcpy(&f, Tensor(name).bytes.data() + 4 * i, 4);
    return f;
  }

  std::filesystem::path dir_;
  nlohmann::json config_;
  std::vector<RawTensor> tensors_;
};

TEST_F(PhiCheckpointTest, OpensSingleFile) {
  WriteSingle();
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->config().hidden_size, kHidden);
  // No generation_config.json: eos falls back to config.json's.
  EXPECT_EQ((*ck)->generation().eos_token_ids, std::vector<int32_t>{3});
  auto v = (*ck)->ReadF32("model.layers.0.mlp.fc2.weight");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), static_cast<size_t>(kHidden * kInter));
  EXPECT_EQ((*v)[17], Value("model.layers.0.mlp.fc2.weight", 17));
  auto b = (*ck)->ReadBf16("lm_head.bias");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)[3], F32ToBf16(Value("lm_head.bias", 3)));
}

TEST_F(PhiCheckpointTest, ReadsGenerationConfig) {
  WriteSingle();
  std::ofstream(dir_ / "generation_config.json") << R"({"eos_token_id": [5, 6]})";
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->generation().eos_token_ids, (std::vector<int32_t>{5, 6}));
}

TEST_F(PhiCheckpointTest, OpensShardedIndex) {
  std::vector<RawTensor> a(tensors_.begin(), tensors_.begin() + 5), b(tensors_.begin() + 5, tensors_.end());
  testing::WriteSafetensors((dir_ / "model-00001-of-00002.safetensors").string(), a);
  testing::WriteSafetensors((dir_ / "model-00002-of-00002.safetensors").string(), b);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto v = (*ck)->ReadF32("lm_head.weight");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)[kHidden + 1], Value("lm_head.weight", kHidden + 1));

  // An index naming a tensor its shard does not hold.
  index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("lm_head.weight"), std::string::npos) << ck.status();
  EXPECT_NE(ck.status().message().find("model-00001-of-00002.safetensors"), std::string::npos);

  // An index naming a shard that is not there.
  index["weight_map"]["lm_head.weight"] = "model-00003-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("model-00003-of-00002.safetensors"), std::string::npos) << ck.status();

  // Path traversal in the index.
  index["weight_map"]["lm_head.weight"] = "../model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());

  // A NUL inside the name (found by tests/fuzz/tensor_index_fuzzer.cc): open() would read the
  // shard named by the part before it.
  index["weight_map"]["lm_head.weight"] = std::string("model-00002-of-00002.safetensors\0x", 34);
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("not a plain file name"), std::string::npos) << ck.status();
}

TEST_F(PhiCheckpointTest, RefusesMissingTensorByName) {
  tensors_.erase(tensors_.begin() + 3);
  const std::string gone = "model.layers.0.self_attn.q_proj.weight";
  WriteSingle();
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find(gone), std::string::npos) << ck.status();
}

TEST_F(PhiCheckpointTest, RefusesWrongShapeAndDtype) {
  for (auto& t : tensors_) {
    if (t.name == "model.layers.0.mlp.fc1.weight") t.shape = {kHidden, kInter};
  }
  WriteSingle();
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("model.layers.0.mlp.fc1.weight"), std::string::npos) << ck.status();
  EXPECT_NE(ck.status().message().find("model.safetensors"), std::string::npos) << ck.status();

  SetUp();
  for (auto& t : tensors_) {
    if (t.name == "model.final_layernorm.bias") {
      t.dtype = "I32";
    }
  }
  WriteSingle();
  ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("model.final_layernorm.bias"), std::string::npos) << ck.status();
  EXPECT_NE(ck.status().message().find("I32"), std::string::npos) << ck.status();
}

TEST_F(PhiCheckpointTest, RefusesMissingWeightsFile) {
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PhiCheckpointTest, ConvertsF16AndBf16) {
  for (auto& t : tensors_) {
    if (t.name == "model.final_layernorm.weight") {
      t.dtype = "F16";
      t.bytes.assign(kHidden * 2, 0);
      t.bytes[2 * 1 + 1] = 0x3c;  // element 1 = 1.0
    } else if (t.name == "model.final_layernorm.bias") {
      t.dtype = "BF16";
      t.bytes.assign(kHidden * 2, 0);
      t.bytes[2 * 2 + 1] = 0xc0;  // element 2 = -2.0
    }
  }
  WriteSingle();
  auto ck = PhiCheckpoint::Open(Dir());
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto w = (*ck)->ReadF32("model.final_layernorm.weight");
  auto b = (*ck)->ReadF32("model.final_layernorm.bias");
  ASSERT_TRUE(w.ok() && b.ok());
  EXPECT_EQ((*w)[1], 1.0f);
  EXPECT_EQ((*w)[0], 0.0f);
  EXPECT_EQ((*b)[2], -2.0f);
}

// Rank r of 2 reads: q/k/v and fc1 rows (output features), dense and fc2 columns (input
// features), embedding / lm_head vocabulary rows; LayerNorms and row-split biases whole.
TEST_F(PhiCheckpointTest, ShardReadsItsSlices) {
  WriteSingle();
  for (int rank = 0; rank < 2; ++rank) {
    auto ck = PhiCheckpoint::Open(Dir(), ShardSpec{rank, 2});
    ASSERT_TRUE(ck.ok()) << ck.status();
    const auto& c = **ck;
    auto q = c.ReadF32("model.layers.0.self_attn.q_proj.weight");
    ASSERT_TRUE(q.ok());
    ASSERT_EQ(q->size(), static_cast<size_t>(kHidden / 2 * kHidden));
    EXPECT_EQ((*q)[0], Value("model.layers.0.self_attn.q_proj.weight", rank * (kHidden / 2) * kHidden));
    auto qb = c.ReadF32("model.layers.0.self_attn.q_proj.bias");
    EXPECT_EQ((*qb)[1], Value("model.layers.0.self_attn.q_proj.bias", rank * kHidden / 2 + 1));
    auto fc2 = c.ReadF32("model.layers.0.mlp.fc2.weight");  // [hidden, inter], columns split
    ASSERT_EQ(fc2->size(), static_cast<size_t>(kHidden * kInter / 2));
    // Row 3, local column 2 = global column rank*inter/2 + 2.
    EXPECT_EQ((*fc2)[3 * (kInter / 2) + 2], Value("model.layers.0.mlp.fc2.weight", 3 * kInter + rank * kInter / 2 + 2));
    auto dense = c.ReadF32("model.layers.0.self_attn.dense.weight");
    EXPECT_EQ((*dense)[1 * (kHidden / 2)], Value("model.layers.0.self_attn.dense.weight", kHidden + rank * kHidden / 2));
    auto fc2b = c.ReadF32("model.layers.0.mlp.fc2.bias");
    EXPECT_EQ(fc2b->size(), static_cast<size_t>(kHidden));
    auto emb = c.ReadF32("model.embed_tokens.weight");
    ASSERT_EQ(emb->size(), static_cast<size_t>(kVocab / 2 * kHidden));
    EXPECT_EQ((*emb)[0], Value("model.embed_tokens.weight", rank * kVocab / 2 * kHidden));
    auto lmb = c.ReadF32("lm_head.bias");
    EXPECT_EQ(lmb->size(), static_cast<size_t>(kVocab / 2));
    auto shape = c.LocalShape("model.layers.0.mlp.fc1.weight");
    EXPECT_EQ(*shape, (std::vector<int64_t>{kInter / 2, kHidden}));
  }
  auto bad = PhiCheckpoint::Open(Dir(), ShardSpec{0, 3});  // 2 heads over 3 ranks
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("num_attention_heads"), std::string::npos) << bad.status();
}

// The fused layouts tile W_in's rows and W_out's columns with this rank's tensors, in order,
// and b_out is the sum of the two output biases.
TEST_F(PhiCheckpointTest, FusedPartsTileTheShardsMatrices) {
  WriteSingle();
  // Parts in order from offset 0, each `size` wide along dimension `dim` of its tensor; the total.
  auto tile = [](const PhiCheckpoint& ck, const auto& parts, int dim) {
    int64_t end = 0;
    for (const FusedPart& part : parts) {
      EXPECT_EQ(part.offset, end) << part.weight;
      const std::vector<int64_t> none = {-1, -1};
      EXPECT_EQ(ck.LocalShape(part.weight).value_or(none)[dim], part.size) << part.weight;
      if (!part.bias.empty()) {
        EXPECT_EQ(ck.LocalShape(part.bias).value_or(none)[0], part.size) << part.bias;
      }
      end += part.size;
    }
    return end;
  };
  for (int world : {1, 2}) {
    for (int rank = 0; rank < world; ++rank) {
      auto ck = PhiCheckpoint::Open(Dir(), ShardSpec{rank, world});
      ASSERT_TRUE(ck.ok()) << ck.status();
      const int64_t attn = kHidden / world, fc1 = kInter / world;
      EXPECT_EQ(tile(**ck, FusedInParts(0, attn, fc1), 0), 3 * attn + fc1);
      EXPECT_EQ(tile(**ck, FusedOutParts(0, attn, fc1), 1), attn + fc1);
      auto b = FusedOutBias(**ck, 0);
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(b->size(), static_cast<size_t>(kHidden));
      for (int64_t i = 0; i < kHidden; ++i) {
        EXPECT_EQ((*b)[i], Value("model.layers.0.self_attn.dense.bias", i) + Value("model.layers.0.mlp.fc2.bias", i));
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker::model
