// Test helper: PEFT LoRA adapter folders written from in-memory tensors, as peft 0.13.2's
// save_pretrained lays them out (adapter_config.json + adapter_model.safetensors), with every
// config field and tensor open to editing so tests can also write broken adapters.
//
// Usage:
//   lora::testing::ScratchDir dir;                                  // removed at scope end
//   auto files = lora::testing::PeftAdapterFiles::Random(lora::testing::TinyPhiConfig(), /*r=*/4,
//                                                        {LoraModule::kQ, LoraModule::kFc2}, /*seed=*/1);
//   files.config["use_rslora"] = true;                              // any field, any JSON type
//   files.tensors.erase(files.TensorName(0, LoraModule::kQ, /*b=*/true));
//   ASSERT_TRUE(files.Write(dir.path()).ok());
#ifndef PHI_TESTS_UNIT_WORKER_LORA_LORA_TEST_FILES_H_
#define PHI_TESTS_UNIT_WORKER_LORA_LORA_TEST_FILES_H_

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/dtype.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/safetensors_writer.h"

namespace phi::worker::lora::testing {

// A tiny Phi shape for adapter tests: hidden 64, MLP 128, 2 layers, 4 heads, vocabulary 256
// (tests/unit/worker/lora/testdata/tiny_phi/config.json, for tools/make_lora.py).
inline model::PhiConfig TinyPhiConfig() {
  model::PhiConfig c;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 128;
  return c;
}

// A fresh folder under the system temp dir, removed (with its contents) on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             absl::StrCat("phi_lora_", ::getpid(), "_", counter.fetch_add(1)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  // "<path>/<name>"
  std::string Sub(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// One tensor of adapter_model.safetensors.
struct AdapterTensor {
  model::DType dtype = model::DType::kF32;
  std::vector<int64_t> shape;
  std::vector<float> values;  // encoded into `dtype` (F32, F16, BF16) when written
  std::vector<uint8_t> raw;   // when non-empty, written as is instead (other dtypes, odd sizes)
};

struct PeftAdapterFiles {
  nlohmann::json config;                         // adapter_config.json
  std::map<std::string, AdapterTensor> tensors;  // adapter_model.safetensors, by tensor name
  std::map<std::string, std::string> metadata = {{"format", "pt"}};

  // "base_model.model.model.layers.<layer>.self_attn.q_proj.lora_A.weight" (lora_B with b).
  static std::string TensorName(int layer, LoraModule module, bool b) {
    return absl::StrCat("base_model.model.", LoraModulePath(layer, module), b ? ".lora_B.weight" : ".lora_A.weight");
  }

  // adapter_config.json as peft 0.13.2 writes it for LoraConfig(r, lora_alpha, target_modules).
  static nlohmann::json PeftConfigJson(int r, double lora_alpha, const std::vector<LoraModule>& modules) {
    nlohmann::json targets = nlohmann::json::array();
    for (LoraModule m : modules) targets.push_back(std::string(LoraModuleName(m)));
    return {{"alpha_pattern", nlohmann::json::object()},
            {"auto_mapping", {{"base_model_class", "PhiForCausalLM"},
                              {"parent_library", "transformers.models.phi.modeling_phi"}}},
            {"base_model_name_or_path", "tiny-phi"},
            {"bias", "none"},
            {"fan_in_fan_out", false},
            {"inference_mode", true},
            {"init_lora_weights", false},
            {"layer_replication", nullptr},
            {"layers_pattern", nullptr},
            {"layers_to_transform", nullptr},
            {"loftq_config", nlohmann::json::object()},
            {"lora_alpha", lora_alpha},
            {"lora_dropout", 0.0},
            {"megatron_config", nullptr},
            {"megatron_core", "megatron.core"},
            {"modules_to_save", nullptr},
            {"peft_type", "LORA"},
            {"r", r},
            {"rank_pattern", nlohmann::json::object()},
            {"revision", nullptr},
            {"target_modules", targets},
            {"task_type", nullptr},
            {"use_dora", false},
            {"use_rslora", false}};
  }

  // Sets A [r, in] and B [out, r] of `module` in `layer` for `base`, values uniform in
  // [-0.5, 0.5) from `rng`.
  void AddModule(const model::PhiConfig& base, int layer, LoraModule module, int r, std::mt19937& rng,
                 model::DType dtype = model::DType::kF32) {
    const int64_t h = base.hidden_size, i = base.intermediate_size;
    const int64_t out = module == LoraModule::kFc1 ? i : h;
    const int64_t in = module == LoraModule::kFc2 ? i : h;
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    auto fill = [&](std::vector<int64_t> shape) {
      AdapterTensor t{dtype, shape, {}, {}};
      t.values.resize(static_cast<size_t>(shape[0] * shape[1]));
      for (float& v : t.values) v = u(rng);
      return t;
    };
    tensors[TensorName(layer, module, false)] = fill({r, in});
    tensors[TensorName(layer, module, true)] = fill({out, r});
  }

  // A random adapter of rank r on `modules` of every layer of `base`.
  static PeftAdapterFiles Random(const model::PhiConfig& base, int r, const std::vector<LoraModule>& modules,
                                 uint32_t seed, model::DType dtype = model::DType::kF32, double lora_alpha = 16) {
    PeftAdapterFiles f;
    f.config = PeftConfigJson(r, lora_alpha, modules);
    std::mt19937 rng(seed);
    for (int l = 0; l < base.num_hidden_layers; ++l) {
      for (LoraModule m : modules) f.AddModule(base, l, m, r, rng, dtype);
    }
    return f;
  }

  // The values the loader should produce for `name`: its values rounded through its dtype.
  std::vector<float> DecodedValues(const std::string& name) const {
    const AdapterTensor& t = tensors.at(name);
    std::vector<float> out(t.values.size());
    for (size_t k = 0; k < out.size(); ++k) {
      const float v = t.values[k];
      out[k] = t.dtype == model::DType::kF16    ? model::F16ToF32(model::F32ToF16(v))
               : t.dtype == model::DType::kBF16 ? model::Bf16ToF32(model::F32ToBf16(v))
                                                : v;
    }
    return out;
  }

  // Writes <dir>/adapter_config.json and <dir>/adapter_model.safetensors (dir created).
  absl::Status Write(const std::string& dir) const {
    std::filesystem::create_directories(dir);
    std::ofstream(absl::StrCat(dir, "/adapter_config.json")) << config.dump(2);
    std::vector<std::vector<uint8_t>> bytes;
    bytes.reserve(tensors.size());
    std::vector<model::TensorToWrite> list;
    for (const auto& [name, t] : tensors) {
      bytes.push_back(t.raw.empty() ? model::EncodeFloats(t.values, t.dtype) : t.raw);
      list.push_back({name, t.dtype, t.shape, bytes.back().data(), bytes.back().size()});
    }
    return model::WriteSafetensors(absl::StrCat(dir, "/adapter_model.safetensors"), list, metadata);
  }
};

}  // namespace phi::worker::lora::testing

#endif  // PHI_TESTS_UNIT_WORKER_LORA_LORA_TEST_FILES_H_
