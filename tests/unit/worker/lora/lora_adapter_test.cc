#include "services/worker/lora/lora_adapter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>

#include "services/worker/model/safetensors.h"
#include "services/worker/model/shard_spec.h"
#include "tests/unit/worker/lora/lora_test_files.h"

namespace phi::worker::lora {
namespace {

using testing::AdapterTensor;
using testing::PeftAdapterFiles;
using testing::ScratchDir;
using testing::TinyPhiConfig;
using model::DType;

constexpr LoraModule kAll[] = {LoraModule::kQ,     LoraModule::kK,   LoraModule::kV,
                               LoraModule::kDense, LoraModule::kFc1, LoraModule::kFc2};

class LoraAdapterTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::shared_ptr<const LoraAdapter>> Load(const PeftAdapterFiles& files, LoraLimits limits = {}) {
    const absl::Status s = files.Write(dir_.path());
    if (!s.ok()) return s;
    return LoadPeftAdapter("test", dir_.path(), base_, limits);
  }

  // Loads `files` and expects a refusal with `code` whose message contains every needle.
  void ExpectRefused(const PeftAdapterFiles& files, std::initializer_list<std::string> needles,
                     absl::StatusCode code = absl::StatusCode::kInvalidArgument, LoraLimits limits = {}) {
    auto a = Load(files, limits);
    ASSERT_FALSE(a.ok()) << "loaded, expected a refusal mentioning " << *needles.begin();
    EXPECT_EQ(a.status().code(), code) << a.status();
    for (const auto& n : needles) {
      EXPECT_NE(a.status().message().find(n), std::string::npos) << a.status() << "\n  lacks: " << n;
    }
  }

  // A rank-4 adapter on every module.
  PeftAdapterFiles All(DType dtype = DType::kF32) { return PeftAdapterFiles::Random(base_, 4, {kAll, kAll + 6}, 7, dtype); }

  model::PhiConfig base_ = TinyPhiConfig();
  ScratchDir dir_;
};

// Every loaded matrix equals the file's values (rounded through the file's dtype).
void ExpectWeightsMatch(const LoraAdapter& a, const PeftAdapterFiles& files, const model::PhiConfig& base) {
  for (int l = 0; l < base.num_hidden_layers; ++l) {
    for (LoraModule m : kAll) {
      const std::string an = PeftAdapterFiles::TensorName(l, m, false);
      const LoraWeights* w = a.weights(l, m);
      if (!files.tensors.count(an)) {
        EXPECT_EQ(w, nullptr) << an;
        continue;
      }
      ASSERT_NE(w, nullptr) << an;
      EXPECT_EQ(w->a, files.DecodedValues(an)) << an;
      EXPECT_EQ(w->b, files.DecodedValues(PeftAdapterFiles::TensorName(l, m, true))) << an;
      EXPECT_EQ(w->in, files.tensors.at(an).shape[1]);
      EXPECT_EQ(w->out, files.tensors.at(PeftAdapterFiles::TensorName(l, m, true)).shape[0]);
    }
  }
}

TEST_F(LoraAdapterTest, LoadsF32AdapterWithAlphaOverRScaling) {
  const PeftAdapterFiles files = All();
  auto a = Load(files);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->name, "test");
  EXPECT_EQ((*a)->path, dir_.path());
  EXPECT_EQ((*a)->rank, 4);
  EXPECT_EQ((*a)->lora_alpha, 16.0f);
  EXPECT_FALSE((*a)->use_rslora);
  EXPECT_EQ((*a)->base_model, "tiny-phi");
  EXPECT_EQ((*a)->dtype, "F32");
  ASSERT_EQ((*a)->layers.size(), 2u);
  EXPECT_EQ((*a)->weights(1, LoraModule::kFc1)->scaling, 4.0f);  // 16 / 4
  EXPECT_EQ((*a)->weights(1, LoraModule::kFc1)->rank, 4);
  for (LoraModule m : kAll) EXPECT_TRUE((*a)->targets(m));
  // Per layer: 4 x (4*64 + 64*4) + fc1 (4*64 + 128*4) + fc2 (4*128 + 64*4), floats.
  EXPECT_EQ((*a)->weight_bytes(), 2 * (4 * 512 + 768 + 768) * 4);
  ExpectWeightsMatch(**a, files, base_);
}

TEST_F(LoraAdapterTest, RsLoraScalesByAlphaOverSqrtR) {
  PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 9, {LoraModule::kV}, 3, DType::kF32, 12);
  files.config["use_rslora"] = true;
  auto a = Load(files);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE((*a)->use_rslora);
  EXPECT_EQ((*a)->weights(0, LoraModule::kV)->scaling, 4.0f);  // 12 / sqrt(9)
  EXPECT_TRUE((*a)->targets(LoraModule::kV));
  EXPECT_FALSE((*a)->targets(LoraModule::kQ));
  EXPECT_EQ((*a)->weights(0, LoraModule::kQ), nullptr);
}

TEST_F(LoraAdapterTest, ConvertsF16AndBf16ToF32) {
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    const PeftAdapterFiles files = All(dtype);
    auto a = Load(files);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ((*a)->dtype, model::DTypeName(dtype));
    ExpectWeightsMatch(**a, files, base_);
    // The rounding is real: some value differs from its F32 original.
    const std::string name = PeftAdapterFiles::TensorName(0, LoraModule::kQ, false);
    EXPECT_NE(files.DecodedValues(name), files.tensors.at(name).values);
  }
}

TEST_F(LoraAdapterTest, TargetModulesForms) {
  struct Case {
    nlohmann::json targets;
    std::vector<LoraModule> modules;  // the tensors written
  };
  const Case cases[] = {
      {"all-linear", {kAll, kAll + 6}},
      {"ALL-LINEAR", {kAll, kAll + 6}},
      {"q_proj", {LoraModule::kQ}},                                                 // a bare name
      {".*\\.(q_proj|v_proj)", {LoraModule::kQ, LoraModule::kV}},                    // peft's regex
      {"model\\.layers\\.\\d+\\.mlp\\.fc[12]", {LoraModule::kFc1, LoraModule::kFc2}},
      {nullptr, {LoraModule::kQ, LoraModule::kV, LoraModule::kFc1, LoraModule::kFc2}},  // peft's Phi default
      {{"self_attn.dense", "model.layers.0.mlp.fc1", "model.layers.1.mlp.fc1"}, {LoraModule::kDense, LoraModule::kFc1}},
  };
  for (const Case& c : cases) {
    PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 2, c.modules, 1);
    files.config["target_modules"] = c.targets;
    auto a = Load(files);
    ASSERT_TRUE(a.ok()) << c.targets << ": " << a.status();
    for (LoraModule m : kAll) {
      const bool want = std::find(c.modules.begin(), c.modules.end(), m) != c.modules.end();
      EXPECT_EQ((*a)->targets(m), want) << c.targets << " " << LoraModuleName(m);
    }
    std::filesystem::remove_all(dir_.path());
  }
}

TEST_F(LoraAdapterTest, LayersToTransformSelectsLayers) {
  PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 2, {LoraModule::kQ}, 1);
  files.config["layers_to_transform"] = {1};
  files.config["layers_pattern"] = "layers";
  // Both layers' tensors: layer 0's are not targeted.
  ExpectRefused(files, {"model.layers.0.self_attn.q_proj", "target_modules does not name"});
  files.tensors.erase(PeftAdapterFiles::TensorName(0, LoraModule::kQ, false));
  files.tensors.erase(PeftAdapterFiles::TensorName(0, LoraModule::kQ, true));
  auto a = Load(files);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->weights(0, LoraModule::kQ), nullptr);
  EXPECT_NE((*a)->weights(1, LoraModule::kQ), nullptr);
  files.config["layers_to_transform"] = 1;  // an integer, as peft also allows
  EXPECT_TRUE(Load(files).ok());
  files.config["layers_to_transform"] = {5};
  ExpectRefused(files, {"layers_to_transform", "base model mismatch"});
  files.config["layers_to_transform"] = {1};
  files.config["layers_pattern"] = "h";
  ExpectRefused(files, {"layers_pattern"});
  // peft refuses both with a string target_modules.
  files.config["layers_pattern"] = nullptr;
  files.config["target_modules"] = "all-linear";
  ExpectRefused(files, {"'layers_to_transform'", "target_modules is a string"});
  files.config["layers_to_transform"] = nullptr;
  files.config["layers_pattern"] = "layers";
  files.config["target_modules"] = ".*q_proj";
  ExpectRefused(files, {"'layers_pattern'", "target_modules is a string"});
}

TEST_F(LoraAdapterTest, RefusesUnsupportedPeftConfigs) {
  struct Case {
    const char* field;
    nlohmann::json value;
    std::vector<std::string> needles;
  };
  const Case cases[] = {
      {"peft_type", "PREFIX_TUNING", {"'peft_type'", "only LORA"}},
      {"peft_type", "LOHA", {"'peft_type'", "only LORA"}},
      {"use_dora", true, {"'use_dora'", "DoRA"}},
      {"modules_to_save", {"lm_head"}, {"'modules_to_save'", "not supported"}},
      {"rank_pattern", {{"q_proj", 4}}, {"'rank_pattern'", "not supported"}},
      {"alpha_pattern", {{"q_proj", 4}}, {"'alpha_pattern'", "not supported"}},
      {"bias", "all", {"'bias'", "only \"none\""}},
      {"bias", "lora_only", {"'bias'", "only \"none\""}},
      {"fan_in_fan_out", true, {"'fan_in_fan_out'"}},
      {"lora_bias", true, {"'lora_bias'"}},
      {"layer_replication", {{0, 1}}, {"'layer_replication'", "not supported"}},
      {"auto_mapping", {{"base_model_class", "LlamaForCausalLM"}}, {"'auto_mapping.base_model_class'", "LlamaForCausalLM"}},
      {"target_modules", {"q_proj", "lm_head"}, {"'target_modules'", "'lm_head'", "not one of"}},
      {"target_modules", {"out_proj"}, {"'target_modules'", "'out_proj'"}},
      {"target_modules", nlohmann::json::array(), {"'target_modules'", "empty"}},
      {"target_modules", ".*", {"'target_modules'", "matches lm_head"}},
      {"target_modules", ".*embed_tokens", {"'target_modules'", "model.embed_tokens"}},
      {"target_modules", "(?!x).*q_proj", {"'target_modules'", "cannot interpret"}},
      {"target_modules", ".*q_proj\\Z", {"'target_modules'", "\\Z"}},
      {"target_modules", ".*\\.nothing", {"'target_modules'", "matches no module"}},
      {"target_modules", "q_proj|v_proj", {"'target_modules'", "matches no module", "whole module path"}},
      {"target_modules", {"model.layers.7.self_attn.q_proj"}, {"'target_modules'", "base model mismatch"}},
      {"target_modules", std::string(2000, 'a') + "|q_proj", {"'target_modules'", "at most"}},
      {"r", 0, {"'r'", "at least 1"}},
  };
  for (const Case& c : cases) {
    PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ}, 1);
    files.config[c.field] = c.value;
    SCOPED_TRACE(::testing::Message() << c.field << " = " << c.value.dump().substr(0, 60));
    auto a = Load(files);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
    EXPECT_NE(a.status().message().find("adapter_config.json"), std::string::npos) << a.status();
    for (const auto& n : c.needles) EXPECT_NE(a.status().message().find(n), std::string::npos) << a.status() << " lacks " << n;
  }
}

TEST_F(LoraAdapterTest, RefusesWrongJsonTypesNamingTheField) {
  struct Case {
    const char* field;
    nlohmann::json value;
  };
  const Case cases[] = {
      {"peft_type", 1},          {"r", "8"},                {"r", 8.5},
      {"lora_alpha", "16"},      {"use_rslora", "true"},    {"use_dora", 0},
      {"fan_in_fan_out", "no"},  {"bias", false},           {"target_modules", 5},
      {"target_modules", {1}},   {"target_modules", {""}},  {"modules_to_save", "lm_head"},
      {"rank_pattern", {1, 2}},  {"alpha_pattern", "x"},    {"auto_mapping", {1}},
      {"base_model_name_or_path", 3},                       {"layers_to_transform", "1"},
      {"layers_to_transform", {-1}},                        {"layers_pattern", 1},
      {"lora_dropout", "0.1"},   {"layer_replication", 1},  {"lora_bias", "yes"},
  };
  for (const Case& c : cases) {
    PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ}, 1);
    files.config[c.field] = c.value;
    auto a = Load(files);
    ASSERT_FALSE(a.ok()) << c.field << " = " << c.value;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
    EXPECT_NE(a.status().message().find(absl::StrCat("'", c.field, "'")), std::string::npos)
        << c.field << " = " << c.value << ": " << a.status();
  }
  PeftAdapterFiles files = All();
  files.config.erase("peft_type");
  ExpectRefused(files, {"'peft_type'", "missing"});
}

TEST_F(LoraAdapterTest, RefusesConfigThatIsNotAJsonObject) {
  ASSERT_TRUE(All().Write(dir_.path()).ok());
  for (const char* text : {"{\"peft_type\": \"LORA\",", "[1, 2]", ""}) {
    std::ofstream(dir_.Sub("adapter_config.json")) << text;
    auto a = LoadPeftAdapter("x", dir_.path(), base_, {});
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(a.status().message().find("adapter_config.json: not "), std::string::npos) << a.status();
  }
}

TEST_F(LoraAdapterTest, RefusesRankOverTheLimit) {
  ExpectRefused(PeftAdapterFiles::Random(base_, 8, {LoraModule::kQ}, 1),
                {"'r' is 8", "limit of 4", "--max-lora-rank"}, absl::StatusCode::kInvalidArgument, LoraLimits{4});
  EXPECT_TRUE(Load(PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ}, 1), LoraLimits{4}).ok());
}

TEST_F(LoraAdapterTest, RefusesMissingAndUnpairedTensors) {
  PeftAdapterFiles files = All();
  files.tensors.erase(PeftAdapterFiles::TensorName(1, LoraModule::kFc2, true));
  ExpectRefused(files, {"model.layers.1.mlp.fc2.lora_A.weight without lora_B.weight"});

  files = All();
  files.tensors.erase(PeftAdapterFiles::TensorName(0, LoraModule::kK, false));
  ExpectRefused(files, {"model.layers.0.self_attn.k_proj.lora_B.weight without lora_A.weight"});

  files = All();
  files.tensors.erase(PeftAdapterFiles::TensorName(1, LoraModule::kDense, false));
  files.tensors.erase(PeftAdapterFiles::TensorName(1, LoraModule::kDense, true));
  ExpectRefused(files, {"missing tensors", "model.layers.1.self_attn.dense"});

  files = All();
  files.tensors.clear();
  ExpectRefused(files, {"missing tensors"});
}

TEST_F(LoraAdapterTest, RefusesTensorsOfOtherModules) {
  struct Case {
    std::string name;
    std::vector<std::string> needles;
  };
  const Case cases[] = {
      {"base_model.model.model.layers.0.self_attn.out_proj.lora_A.weight", {"is not a LoRA weight"}},
      {"base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", {"is not a LoRA weight"}},
      {"base_model.model.lm_head.lora_A.weight", {"is not a LoRA weight"}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", {"adapter name ('default')", "strips"}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight", {"is not a LoRA weight"}},
      {"model.layers.0.self_attn.q_proj.lora_A.weight", {"is not a LoRA weight"}},
      {"base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight", {"is not a LoRA weight"}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", {"DoRA"}},
      {"base_model.model.model.embed_tokens.lora_embedding_A", {"embedding"}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", {"lora_B bias"}},
      {"base_model.model.lm_head.modules_to_save.weight", {"modules_to_save"}},
  };
  for (const Case& c : cases) {
    PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ}, 1);
    files.tensors[c.name] = {DType::kF32, {4, 64}, std::vector<float>(256, 0.5f), {}};
    std::vector<std::string> needles = c.needles;
    needles.push_back(c.name);
    SCOPED_TRACE(c.name);
    auto a = Load(files);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
    for (const auto& n : needles) EXPECT_NE(a.status().message().find(n), std::string::npos) << a.status() << " lacks " << n;
  }
  // A Phi module that target_modules does not name.
  PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ, LoraModule::kK}, 1);
  files.config["target_modules"] = {"q_proj"};
  ExpectRefused(files, {"model.layers.0.self_attn.k_proj", "target_modules does not name"});
}

TEST_F(LoraAdapterTest, RefusesLayersTheBaseDoesNotHave) {
  PeftAdapterFiles files = PeftAdapterFiles::Random(base_, 4, {LoraModule::kQ}, 1);
  std::mt19937 rng(1);
  model::PhiConfig deeper = base_;
  deeper.num_hidden_layers = 31;
  files.AddModule(deeper, 30, LoraModule::kQ, 4, rng);
  ExpectRefused(files, {"base model mismatch: adapter has layer 30, the base has 2"});
}

TEST_F(LoraAdapterTest, RefusesShapesThatDoNotFitTheBase) {
  struct Case {
    LoraModule module;
    bool b;
    std::vector<int64_t> shape;
    std::vector<std::string> needles;
  };
  const Case cases[] = {
      {LoraModule::kQ, false, {4, 32}, {"base model mismatch", "takes 64 input features (hidden_size 64)"}},
      {LoraModule::kFc1, true, {64, 4}, {"base model mismatch", "has 128 output features (intermediate_size 128)"}},
      {LoraModule::kFc2, false, {4, 64}, {"base model mismatch", "takes 128 input features (intermediate_size 128)"}},
      {LoraModule::kDense, true, {4, 64}, {"base model mismatch"}},
      {LoraModule::kV, false, {2, 64}, {"rank 2", "r is 4"}},
      {LoraModule::kK, true, {64, 8}, {"rank 8", "r is 4"}},
      {LoraModule::kQ, false, {4, 64, 1}, {"2 dimensions"}},
      {LoraModule::kQ, true, {256}, {"2 dimensions"}},
  };
  for (const Case& c : cases) {
    PeftAdapterFiles files = All();
    AdapterTensor& t = files.tensors[PeftAdapterFiles::TensorName(1, c.module, c.b)];
    t.shape = c.shape;
    int64_t n = 1;
    for (int64_t d : c.shape) n *= d;
    t.values.assign(static_cast<size_t>(n), 0.25f);
    SCOPED_TRACE(PeftAdapterFiles::TensorName(1, c.module, c.b));
    std::vector<std::string> needles = c.needles;
    needles.push_back(PeftAdapterFiles::TensorName(1, c.module, c.b));
    auto a = Load(files);
    ASSERT_FALSE(a.ok());
    for (const auto& nd : needles) EXPECT_NE(a.status().message().find(nd), std::string::npos) << a.status() << " lacks " << nd;
  }
}

TEST_F(LoraAdapterTest, RefusesOtherDtypesAndMixedDtypes) {
  PeftAdapterFiles files = All();
  AdapterTensor& t = files.tensors[PeftAdapterFiles::TensorName(0, LoraModule::kQ, false)];
  t.dtype = DType::kF64;
  t.raw.assign(4 * 64 * 8, 0);
  ExpectRefused(files, {"dtype F64", "only F32, F16 and BF16"});
  t.dtype = DType::kI32;
  t.raw.assign(4 * 64 * 4, 0);
  ExpectRefused(files, {"dtype I32"});
  t.raw.clear();
  t.dtype = DType::kBF16;
  ExpectRefused(files, {"mixed dtypes"});
}

TEST_F(LoraAdapterTest, RefusesNonFiniteWeights) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      PeftAdapterFiles files = All(dtype);
      files.tensors[PeftAdapterFiles::TensorName(1, LoraModule::kFc2, true)].values[17] = bad;
      ExpectRefused(files, {"non-finite", "element 17", PeftAdapterFiles::TensorName(1, LoraModule::kFc2, true)});
    }
  }
  // F16 overflow: a finite F32 value past 65504 is infinity in the file.
  PeftAdapterFiles files = All(DType::kF16);
  files.tensors[PeftAdapterFiles::TensorName(0, LoraModule::kQ, false)].values[0] = 1e6f;
  ExpectRefused(files, {"non-finite"});
}

TEST_F(LoraAdapterTest, MissingFiles) {
  auto a = LoadPeftAdapter("x", dir_.Sub("nope"), base_, {});
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(a.status().message().find("adapter_config.json"), std::string::npos) << a.status();

  ASSERT_TRUE(All().Write(dir_.path()).ok());
  std::filesystem::remove(dir_.Sub("adapter_model.safetensors"));
  a = LoadPeftAdapter("x", dir_.path(), base_, {});
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(a.status().message().find("adapter_model.safetensors"), std::string::npos) << a.status();

  std::ofstream(dir_.Sub("adapter_model.bin")) << "pickle";
  a = LoadPeftAdapter("x", dir_.path(), base_, {});
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("adapter_model.bin"), std::string::npos) << a.status();
}

TEST_F(LoraAdapterTest, RefusesFilesLargerThanTheBaseAllows) {
  PeftAdapterFiles files = All();
  // Rank 4 on every module of 2 layers needs 24 KiB; 2 MiB of anything is not this adapter.
  files.tensors["padding"] = {DType::kF32, {512, 1024}, std::vector<float>(512 * 1024, 0.0f), {}};
  ExpectRefused(files, {"adapter_model.safetensors", "more than a rank-4 adapter of this base can hold"});

  std::ofstream(dir_.Sub("adapter_config.json")) << std::string(2 << 20, ' ');
  auto a = LoadPeftAdapter("x", dir_.path(), base_, {});
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("bytes, more than"), std::string::npos) << a.status();
}

TEST_F(LoraAdapterTest, SliceForShardFollowsTheBaseSlicing) {
  auto full = Load(All());
  ASSERT_TRUE(full.ok()) << full.status();
  const LoraAdapter& a = **full;

  auto copy = SliceForShard(a, base_, {0, 1});
  for (LoraModule m : kAll) {
    EXPECT_EQ(copy->weights(1, m)->a, a.weights(1, m)->a);
    EXPECT_EQ(copy->weights(1, m)->b, a.weights(1, m)->b);
  }

  const std::vector<model::PhiTensorSpec> specs = model::PhiTensorSpecs(base_);
  auto spec_of = [&](int layer, LoraModule m) {
    const std::string name = absl::StrCat(LoraModulePath(layer, m), ".weight");
    for (const auto& s : specs) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no base tensor " << name;
    return model::PhiTensorSpec{};
  };
  std::vector<std::shared_ptr<const LoraAdapter>> shards;
  for (int r = 0; r < 2; ++r) shards.push_back(SliceForShard(a, base_, {r, 2}));
  for (int l = 0; l < base_.num_hidden_layers; ++l) {
    for (LoraModule m : kAll) {
      const LoraWeights& w = *a.weights(l, m);
      const model::PhiTensorSpec spec = spec_of(l, m);
      std::vector<float> delta_sum(static_cast<size_t>(w.out), 0.0f);
      std::vector<float> x(static_cast<size_t>(w.in));
      for (size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.37f * static_cast<float>(k));
      for (int r = 0; r < 2; ++r) {
        const LoraWeights& s = *shards[static_cast<size_t>(r)]->weights(l, m);
        const model::Slice slice = model::ShardSlice(spec, {r, 2});
        EXPECT_EQ(s.rank, w.rank);
        EXPECT_EQ(s.scaling, w.scaling);
        if (slice.axis == 0) {  // output features: B rows, A whole
          EXPECT_EQ(s.out, slice.end - slice.begin);
          EXPECT_EQ(s.in, w.in);
          EXPECT_EQ(s.a, w.a);
          EXPECT_EQ(s.b, std::vector<float>(w.b.begin() + slice.begin * w.rank, w.b.begin() + slice.end * w.rank));
        } else {  // input features: A columns, B whole
          ASSERT_EQ(slice.axis, 1);
          EXPECT_EQ(s.in, slice.end - slice.begin);
          EXPECT_EQ(s.out, w.out);
          EXPECT_EQ(s.b, w.b);
          for (int64_t q = 0; q < w.rank; ++q) {
            for (int64_t c = 0; c < s.in; ++c) {
              ASSERT_EQ(s.a[static_cast<size_t>(q * s.in + c)], w.a[static_cast<size_t>(q * w.in + slice.begin + c)]);
            }
          }
        }
        // This rank's B (A x_r), placed where its outputs go; input-split ranks add up.
        const int64_t in0 = slice.axis == 1 ? slice.begin : 0;
        const int64_t out0 = slice.axis == 0 ? slice.begin : 0;
        for (int64_t o = 0; o < s.out; ++o) {
          for (int64_t q = 0; q < s.rank; ++q) {
            float ax = 0;
            for (int64_t c = 0; c < s.in; ++c) ax += s.a[static_cast<size_t>(q * s.in + c)] * x[static_cast<size_t>(in0 + c)];
            delta_sum[static_cast<size_t>(out0 + o)] += s.b[static_cast<size_t>(o * s.rank + q)] * ax;
          }
        }
      }
      for (int64_t o = 0; o < w.out; ++o) {
        double want = 0;
        for (int64_t q = 0; q < w.rank; ++q) {
          double ax = 0;
          for (int64_t c = 0; c < w.in; ++c) ax += double{w.a[static_cast<size_t>(q * w.in + c)]} * x[static_cast<size_t>(c)];
          want += double{w.b[static_cast<size_t>(o * w.rank + q)]} * ax;
        }
        ASSERT_NEAR(delta_sum[static_cast<size_t>(o)], want, 1e-4) << LoraModulePath(l, m) << " output " << o;
      }
    }
  }
}

// The folder of the adapters peft saved for these tests (tests/unit/worker/lora/CMakeLists.txt),
// or "" when the test runs without ctest.
std::string PeftDir(const char* sub) {
  const char* root = std::getenv("PHI_LORA_PEFT_DIR");
  return root == nullptr ? "" : absl::StrCat(root, "/", sub);
}

// An adapter that peft 0.13.2 itself saved through tools/make_lora.py (ctest fixture
// lora_peft_make_lora) for testdata/tiny_phi with --rank 8 --alpha 16 --rslora --dtype bf16
// --targets q_proj,v_proj,dense,fc2.
TEST_F(LoraAdapterTest, LoadsAnAdapterSavedByPeft) {
  const std::string dir = PeftDir("make_lora");
  if (dir.empty() || !std::filesystem::exists(dir)) {
    GTEST_SKIP() << "no make_lora adapter (ctest makes it under PHI_LORA_PEFT_DIR when tools/make_lora.py exists)";
  }
  auto a = LoadPeftAdapter("peft", dir, base_, {});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->rank, 8);
  EXPECT_EQ((*a)->dtype, "BF16");
  EXPECT_TRUE((*a)->use_rslora);
  EXPECT_FLOAT_EQ((*a)->weights(0, LoraModule::kQ)->scaling, 16.0f / std::sqrt(8.0f));
  for (LoraModule m : kAll) {
    const bool want = m == LoraModule::kQ || m == LoraModule::kV || m == LoraModule::kDense || m == LoraModule::kFc2;
    EXPECT_EQ((*a)->targets(m), want) << LoraModuleName(m);
  }
  // The values are the file's, read independently of the loader.
  auto file = model::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const model::TensorInfo* info = (*file)->Find(PeftAdapterFiles::TensorName(1, LoraModule::kFc2, false));
  ASSERT_NE(info, nullptr);
  ASSERT_EQ(info->shape, (std::vector<int64_t>{8, 128}));
  const LoraWeights& w = *(*a)->weights(1, LoraModule::kFc2);
  for (int64_t k = 0; k < info->NumElements(); ++k) {
    uint16_t v;
    std::memcpy(&v, (*file)->Data(*info) + 2 * k, 2);
    ASSERT_EQ(w.a[static_cast<size_t>(k)], model::Bf16ToF32(v)) << k;
  }
  // B is not zero (init_lora_weights=False).
  EXPECT_NE(std::count(w.b.begin(), w.b.end(), 0.0f), static_cast<std::ptrdiff_t>(w.b.size()));
}

// Adapters peft saved with each form of target_modules (make_peft_target_forms.py, ctest fixture
// lora_peft_target_forms): the loader must adapt exactly the modules peft wrote tensors for,
// which it only accepts when its reading of target_modules agrees with peft's.
TEST_F(LoraAdapterTest, LoadsEveryTargetModulesFormPeftSaves) {
  const std::string root = PeftDir("target_forms");
  if (root.empty()) GTEST_SKIP() << "PHI_LORA_PEFT_DIR not set (ctest sets it)";
  int forms = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string dir = entry.path().string();
    SCOPED_TRACE(dir);
    ++forms;
    auto a = LoadPeftAdapter("peft", dir, base_, {});
    ASSERT_TRUE(a.ok()) << a.status();
    auto file = model::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    int adapted = 0;
    for (int l = 0; l < base_.num_hidden_layers; ++l) {
      for (LoraModule m : kAll) {
        const bool in_file = (*file)->Find(PeftAdapterFiles::TensorName(l, m, false)) != nullptr;
        EXPECT_EQ((*a)->weights(l, m) != nullptr, in_file) << LoraModulePath(l, m);
        adapted += in_file;
      }
    }
    EXPECT_EQ(static_cast<size_t>(2 * adapted), (*file)->tensors().size());
    EXPECT_EQ((*a)->dtype, entry.path().filename() == "f16" ? "F16" : "F32");
    EXPECT_EQ((*a)->weights(0, LoraModule::kQ) == nullptr ? 0.0f : (*a)->weights(0, LoraModule::kQ)->scaling,
              (*a)->weights(0, LoraModule::kQ) == nullptr ? 0.0f : 2.0f);  // lora_alpha 8 / r 4
  }
  EXPECT_EQ(forms, 9);
}

}  // namespace
}  // namespace phi::worker::lora
