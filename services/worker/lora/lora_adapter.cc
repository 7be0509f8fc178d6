#include "services/worker/lora/lora_adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/status_macros.h"
#include "services/worker/lora/peft_config.h"
#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors.h"

namespace phi::worker::lora {
namespace {

constexpr char kConfigFile[] = "adapter_config.json";
constexpr char kWeightsFile[] = "adapter_model.safetensors";
// adapter_config.json is a few hundred bytes; anything near this is not a PEFT config.
constexpr int64_t kMaxConfigBytes = 1 << 20;
// Room for the safetensors header beyond the largest set of A/B matrices the base can take.
constexpr int64_t kHeaderSlackBytes = 1 << 20;
// What peft's save_pretrained puts before transformers' module path.
constexpr absl::string_view kTensorPrefix = "base_model.model.";

constexpr LoraModule kAllModules[] = {LoraModule::kQ,     LoraModule::kK,    LoraModule::kV,
                                      LoraModule::kDense, LoraModule::kFc1, LoraModule::kFc2};

// LoraModuleName as the absl::string_view that absl::StrCat takes.
absl::string_view Name(LoraModule m) {
  const std::string_view s = LoraModuleName(m);
  return {s.data(), s.size()};
}

bool IsAttention(LoraModule m) { return m != LoraModule::kFc1 && m != LoraModule::kFc2; }

// The base layer's [out, in] (unsharded).
std::pair<int64_t, int64_t> BaseShape(const model::PhiConfig& c, LoraModule m) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  switch (m) {
    case LoraModule::kFc1: return {i, h};
    case LoraModule::kFc2: return {h, i};
    default: return {h, h};
  }
}

// The config.json field that sets a width, for "base model mismatch" messages.
const char* WidthField(const model::PhiConfig& c, int64_t width) {
  return width == c.intermediate_size && width != c.hidden_size ? "intermediate_size" : "hidden_size";
}

// Whether `dir/file` exists as a file, and its size.
bool FileSize(const std::string& path, int64_t* size) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = static_cast<int64_t>(st.st_size);
  return true;
}

struct ParsedName {
  int64_t layer = 0;
  LoraModule module = LoraModule::kQ;
  bool is_b = false;  // lora_B (else lora_A)
};

// "base_model.model.model.layers.<l>.self_attn.<q_proj|k_proj|v_proj|dense>.lora_<A|B>.weight" or
// "....mlp.<fc1|fc2>...."; the error says what the tensor is when it is a known PEFT kind this
// server does not apply.
absl::StatusOr<ParsedName> ParseTensorName(absl::string_view name) {
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name.substr(0, 200), "' ", why));
  };
  if (absl::StrContains(name, "lora_magnitude_vector")) return refuse("is a DoRA magnitude vector: DoRA is not supported");
  if (absl::StrContains(name, "lora_embedding_")) return refuse("adapts an embedding: only linear layers are supported");
  if (absl::EndsWith(name, ".bias") && absl::StrContains(name, "lora_B")) {
    return refuse("is a lora_B bias: LoRA biases are not supported");
  }
  if (absl::StrContains(name, "modules_to_save")) return refuse("is a saved copy of a base module: modules_to_save is not supported");
  const std::string expected = absl::StrCat(
      "is not a LoRA weight of a Phi layer's q_proj, k_proj, v_proj, dense, fc1 or fc2 (expected ", kTensorPrefix,
      "model.layers.<layer>.self_attn.<q_proj|k_proj|v_proj|dense>.lora_<A|B>.weight or ",
      "....mlp.<fc1|fc2>.lora_<A|B>.weight)");
  if (!absl::StartsWith(name, kTensorPrefix)) return refuse(expected);
  const std::vector<absl::string_view> parts = absl::StrSplit(name.substr(kTensorPrefix.size()), '.');
  // model layers <l> <parent> <module> lora_X weight
  if (parts.size() == 8 && (parts[5] == "lora_A" || parts[5] == "lora_B") && parts[7] == "weight") {
    return refuse(absl::StrCat("holds an adapter name ('", parts[6].substr(0, 40),
                               "'), which peft's save_pretrained strips: expected ...", parts[5], ".weight"));
  }
  if (parts.size() != 7 || parts[0] != "model" || parts[1] != "layers" || parts[6] != "weight") return refuse(expected);
  ParsedName out;
  if (parts[2].empty() || parts[2].size() > 9 || !absl::SimpleAtoi(parts[2], &out.layer) || out.layer < 0) {
    return refuse(expected);
  }
  bool known = false;
  for (LoraModule m : kAllModules) {
    if (parts[4] == Name(m) && parts[3] == (IsAttention(m) ? "self_attn" : "mlp")) {
      out.module = m;
      known = true;
    }
  }
  if (!known) return refuse(expected);
  if (parts[5] != "lora_A" && parts[5] != "lora_B") return refuse(expected);
  out.is_b = parts[5] == "lora_B";
  return out;
}

// Copies `n` elements of `dtype` at `src` (not necessarily aligned) to F32, refusing NaN/Inf.
absl::Status ConvertToF32(const uint8_t* src, model::DType dtype, int64_t n, float* out) {
  // One loop per dtype (vectorizable), then one pass for NaN/Inf: the load-time budget is the
  // conversion of tens of MB.
  if (dtype == model::DType::kF32) {
    std::memcpy(out, src, static_cast<size_t>(n) * sizeof(float));
  } else if (dtype == model::DType::kBF16) {
    for (int64_t k = 0; k < n; ++k) {
      uint16_t h;
      std::memcpy(&h, src + 2 * k, 2);
      out[k] = model::Bf16ToF32(h);
    }
  } else {
    for (int64_t k = 0; k < n; ++k) {
      uint16_t h;
      std::memcpy(&h, src + 2 * k, 2);
      out[k] = model::F16ToF32(h);
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    if (!std::isfinite(out[k])) return absl::InvalidArgumentError(absl::StrCat("element ", k, " is ", out[k]));
  }
  return absl::OkStatus();
}

// Every module path of the base that target_modules could name, as the check against the
// module set of PhiForCausalLM: the linear layers outside the decoder layers must not be targeted.
absl::Status CheckTargets(const PeftConfig& cfg, const model::PhiConfig& base, const std::string& config_path) {
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": field 'target_modules' ", why));
  };
  for (const char* outside : {"lm_head", "model.embed_tokens"}) {
    if (TargetsModule(cfg, outside, -1)) {
      return refuse(absl::StrCat("matches ", outside, ", which is not supported (only q_proj, k_proj, v_proj, dense, ",
                                 "fc1 and fc2 of the layers)"));
    }
  }
  auto matches_any = [&](const PeftConfig& c) {
    for (int l = 0; l < base.num_hidden_layers; ++l) {
      for (LoraModule m : kAllModules) {
        if (TargetsModule(c, LoraModulePath(l, m), l)) return true;
      }
    }
    return false;
  };
  if (cfg.target_modules.kind == PeftTargetModules::Kind::kNames) {
    for (const std::string& name : cfg.target_modules.names) {
      PeftConfig one = cfg;
      one.target_modules.names = {name};
      if (!matches_any(one)) {
        return refuse(absl::StrCat("entry '", name.substr(0, 120), "' matches no module of the base model (",
                                   base.num_hidden_layers, " layers",
                                   cfg.layers_to_transform.empty() ? "" : ", within layers_to_transform",
                                   "): base model mismatch"));
      }
    }
  } else if (!matches_any(cfg)) {
    return refuse(absl::StrCat("matches no module of the base model (", base.num_hidden_layers, " layers)",
                               cfg.target_modules.kind == PeftTargetModules::Kind::kRegex
                                   ? ": a regular expression must match the whole module path, as in "
                                     "'.*\\.(q_proj|v_proj)' for model.layers.<l>.self_attn.q_proj"
                                   : ""));
  }
  for (int64_t l : cfg.layers_to_transform) {
    if (l >= base.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": field 'layers_to_transform' names layer ", l,
                                                     ": base model mismatch, the base has ", base.num_hidden_layers,
                                                     " layers"));
    }
  }
  return absl::OkStatus();
}

struct TensorPair {
  const model::TensorInfo* a = nullptr;
  const model::TensorInfo* b = nullptr;
};

// Checks one tensor's dtype and shape against the base.
absl::Status CheckTensor(const model::TensorInfo& info, const ParsedName& n, const PeftConfig& cfg,
                         const model::PhiConfig& base, const std::string& path) {
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", info.name, "' ", why));
  };
  if (info.dtype != model::DType::kF32 && info.dtype != model::DType::kF16 && info.dtype != model::DType::kBF16) {
    return refuse(absl::StrCat("has dtype ", model::DTypeName(info.dtype), ": only F32, F16 and BF16 are supported"));
  }
  const auto [out, in] = BaseShape(base, n.module);
  const std::string module = absl::StrCat(Name(n.module), " of layer ", n.layer);
  if (info.shape.size() != 2) {
    return refuse(absl::StrCat("has shape ", info.ShapeString(), ": a LoRA matrix has 2 dimensions"));
  }
  const int64_t rank = n.is_b ? info.shape[1] : info.shape[0];
  const int64_t width = n.is_b ? info.shape[0] : info.shape[1];
  const int64_t base_width = n.is_b ? out : in;
  if (width != base_width) {
    return refuse(absl::StrCat("has shape ", info.ShapeString(), ": base model mismatch, the base's ", module,
                               n.is_b ? " has " : " takes ", base_width, n.is_b ? " output" : " input",
                               " features (", WidthField(base, base_width), " ", base_width, ")"));
  }
  if (rank != cfg.r) {
    return refuse(absl::StrCat("has shape ", info.ShapeString(), ": rank ", rank, ", but adapter_config.json's r is ",
                               cfg.r));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view LoraModuleName(LoraModule module) {
  switch (module) {
    case LoraModule::kQ: return "q_proj";
    case LoraModule::kK: return "k_proj";
    case LoraModule::kV: return "v_proj";
    case LoraModule::kDense: return "dense";
    case LoraModule::kFc1: return "fc1";
    case LoraModule::kFc2: return "fc2";
  }
  return "?";
}

std::string LoraModulePath(int layer, LoraModule module) {
  return absl::StrCat("model.layers.", layer, IsAttention(module) ? ".self_attn." : ".mlp.", Name(module));
}

bool LoraAdapter::targets(LoraModule module) const {
  for (const auto& layer : layers) {
    if (layer[static_cast<size_t>(module)]) return true;
  }
  return false;
}

int64_t LoraAdapter::weight_bytes() const {
  int64_t bytes = 0;
  for (const auto& layer : layers) {
    for (const auto& w : layer) {
      if (w) bytes += static_cast<int64_t>((w->a.size() + w->b.size()) * sizeof(float));
    }
  }
  return bytes;
}

namespace {

// adapter_config.json: read (bounded), parsed, checked against the rank limit and the base.
absl::StatusOr<PeftConfig> ReadConfig(const std::string& dir, const model::PhiConfig& base,
                                      const LoraLimits& limits) {
  const std::string config_path = absl::StrCat(dir, "/", kConfigFile);
  int64_t size = 0;
  if (!FileSize(config_path, &size)) {
    return absl::NotFoundError(absl::StrCat(config_path, ": no such file (not a PEFT adapter folder?)"));
  }
  if (size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", size, " bytes, more than the ", kMaxConfigBytes,
                                                   " an adapter_config.json may have"));
  }
  PHI_ASSIGN_OR_RETURN(std::string text, model::ReadFileToString(config_path));
  PHI_ASSIGN_OR_RETURN(PeftConfig cfg, ParsePeftConfig(text, config_path));
  if (cfg.r > limits.max_rank) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": field 'r' is ", cfg.r, ", over this server's limit of ",
                                                   limits.max_rank, " (--max-lora-rank)"));
  }
  PHI_RETURN_IF_ERROR(CheckTargets(cfg, base, config_path));
  return cfg;
}

// adapter_model.safetensors, refused before it is mapped when it is larger than an adapter of
// this rank can be for this base (all six modules of every layer in F32, plus the header).
absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> OpenWeights(const std::string& dir, const PeftConfig& cfg,
                                                                    const model::PhiConfig& base) {
  const std::string weights_path = absl::StrCat(dir, "/", kWeightsFile);
  int64_t size = 0;
  if (!FileSize(weights_path, &size)) {
    if (FileSize(absl::StrCat(dir, "/adapter_model.bin"), &size)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": has adapter_model.bin (pickle) but no ", kWeightsFile,
                                                     ": only safetensors are read (save_pretrained with "
                                                     "safe_serialization=True, peft's default)"));
    }
    return absl::NotFoundError(absl::StrCat(weights_path, ": no such file"));
  }
  const int64_t h = base.hidden_size, i = base.intermediate_size;
  const int64_t max_bytes = int64_t{cfg.r} * (10 * h + 2 * i) * 4 * base.num_hidden_layers + kHeaderSlackBytes;
  if (size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", size, " bytes, more than a rank-", cfg.r,
                                                   " adapter of this base can hold (", max_bytes, ")"));
  }
  return model::SafetensorsFile::Open(weights_path);
}

using TensorPairs = std::map<std::pair<int64_t, LoraModule>, TensorPair>;

// First pass over the tensors: names, dtypes and shapes, before any allocation. Returns the
// A/B pair of every adapted module and sets *dtype to the file's one dtype.
absl::StatusOr<TensorPairs> IndexTensors(const model::SafetensorsFile& file, const PeftConfig& cfg,
                                         const model::PhiConfig& base, const std::string& weights_path,
                                         std::optional<model::DType>* dtype) {
  TensorPairs pairs;
  for (const auto& [tensor_name, info] : file.tensors()) {
    auto parsed = ParseTensorName(tensor_name);
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", parsed.status().message()));
    const ParsedName& n = *parsed;
    if (n.layer >= base.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", tensor_name,
                                                     "': base model mismatch: adapter has layer ", n.layer,
                                                     ", the base has ", base.num_hidden_layers, " (num_hidden_layers)"));
    }
    PHI_RETURN_IF_ERROR(CheckTensor(info, n, cfg, base, weights_path));
    if (!TargetsModule(cfg, LoraModulePath(static_cast<int>(n.layer), n.module), static_cast<int>(n.layer))) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", tensor_name, "' adapts ",
                                                     LoraModulePath(static_cast<int>(n.layer), n.module),
                                                     ", which adapter_config.json's target_modules does not name"));
    }
    if (*dtype && **dtype != info.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", tensor_name, "' is ",
                                                     model::DTypeName(info.dtype), " but others are ",
                                                     model::DTypeName(**dtype), ": mixed dtypes are not supported"));
    }
    *dtype = info.dtype;
    TensorPair& pair = pairs[{n.layer, n.module}];
    (n.is_b ? pair.b : pair.a) = &info;
  }
  return pairs;
}

// Every module target_modules selects has both its lora_A and its lora_B.
absl::Status CheckPairsComplete(const TensorPairs& pairs, const PeftConfig& cfg, const model::PhiConfig& base,
                                const std::string& weights_path) {
  for (int l = 0; l < base.num_hidden_layers; ++l) {
    for (LoraModule m : kAllModules) {
      const std::string module_path = LoraModulePath(l, m);
      auto it = pairs.find({l, m});
      if (it == pairs.end()) {
        if (TargetsModule(cfg, module_path, l)) {
          return absl::InvalidArgumentError(absl::StrCat(weights_path, ": missing tensors: target_modules adapts ",
                                                         module_path, " but there is no ", kTensorPrefix, module_path,
                                                         ".lora_A.weight / lora_B.weight"));
        }
        continue;
      }
      if (it->second.a == nullptr || it->second.b == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(weights_path, ": missing tensor: ", kTensorPrefix, module_path,
                                                       it->second.a == nullptr ? ".lora_B.weight without lora_A.weight"
                                                                               : ".lora_A.weight without lora_B.weight"));
      }
    }
  }
  return absl::OkStatus();
}

// Second pass: one module's A and B converted to F32 (non-finite values refused).
absl::StatusOr<LoraWeights> ConvertModule(const model::SafetensorsFile& file, const TensorPair& pair,
                                          LoraModule module, const PeftConfig& cfg, const model::PhiConfig& base,
                                          const std::string& weights_path) {
  const auto [out, in] = BaseShape(base, module);
  LoraWeights w;
  w.rank = cfg.r;
  w.in = in;
  w.out = out;
  w.scaling = static_cast<float>(cfg.use_rslora ? cfg.lora_alpha / std::sqrt(static_cast<double>(cfg.r))
                                                : cfg.lora_alpha / cfg.r);
  w.a.resize(static_cast<size_t>(cfg.r * in));
  w.b.resize(static_cast<size_t>(out * cfg.r));
  for (const auto& [info, dst] : {std::pair{pair.a, &w.a}, std::pair{pair.b, &w.b}}) {
    absl::Status s = ConvertToF32(file.Data(*info), info->dtype, static_cast<int64_t>(dst->size()), dst->data());
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", info->name,
                                                     "' holds a non-finite value: ", s.message()));
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const LoraAdapter>> LoadPeftAdapter(std::string name, const std::string& dir,
                                                                  const model::PhiConfig& base,
                                                                  const LoraLimits& limits) {
  PHI_ASSIGN_OR_RETURN(PeftConfig cfg, ReadConfig(dir, base, limits));
  PHI_ASSIGN_OR_RETURN(auto file, OpenWeights(dir, cfg, base));
  const std::string weights_path = absl::StrCat(dir, "/", kWeightsFile);
  std::optional<model::DType> dtype;
  PHI_ASSIGN_OR_RETURN(TensorPairs pairs, IndexTensors(*file, cfg, base, weights_path, &dtype));
  PHI_RETURN_IF_ERROR(CheckPairsComplete(pairs, cfg, base, weights_path));
  if (pairs.empty()) return absl::InvalidArgumentError(absl::StrCat(weights_path, ": holds no LoRA tensors"));

  auto adapter = std::make_shared<LoraAdapter>();
  adapter->name = std::move(name);
  adapter->path = dir;
  adapter->rank = cfg.r;
  adapter->lora_alpha = static_cast<float>(cfg.lora_alpha);
  adapter->use_rslora = cfg.use_rslora;
  adapter->base_model = cfg.base_model_name_or_path;
  adapter->dtype = std::string(model::DTypeName(dtype.value_or(model::DType::kF32)));
  adapter->layers.resize(static_cast<size_t>(base.num_hidden_layers));
  for (const auto& [key, pair] : pairs) {
    PHI_ASSIGN_OR_RETURN(LoraWeights w, ConvertModule(*file, pair, key.second, cfg, base, weights_path));
    adapter->layers[static_cast<size_t>(key.first)][static_cast<size_t>(key.second)] = std::move(w);
  }
  return std::shared_ptr<const LoraAdapter>(std::move(adapter));
}

std::shared_ptr<const LoraAdapter> SliceForShard(const LoraAdapter& adapter, const model::PhiConfig& base,
                                                 const model::ShardSpec& shard) {
  auto sliced = std::make_shared<LoraAdapter>(adapter);
  if (shard.world_size == 1) return sliced;
  for (auto& layer : sliced->layers) {
    for (LoraModule m : kAllModules) {
      auto& w = layer[static_cast<size_t>(m)];
      if (!w) continue;
      // The base weight's slice (model::ShardSlice) says which features this rank holds.
      const auto [out, in] = BaseShape(base, m);
      const bool by_input = m == LoraModule::kDense || m == LoraModule::kFc2;
      const model::PhiTensorSpec spec{"", {out, in}, by_input ? model::SplitKind::kInput : model::SplitKind::kOutput};
      const model::Slice slice = model::ShardSlice(spec, shard);
      const int64_t part = slice.end - slice.begin;
      if (by_input) {  // A [rank, in]: columns [begin, end)
        std::vector<float> a(static_cast<size_t>(w->rank * part));
        for (int64_t r = 0; r < w->rank; ++r) {
          std::memcpy(&a[static_cast<size_t>(r * part)], &w->a[static_cast<size_t>(r * w->in + slice.begin)],
                      static_cast<size_t>(part) * sizeof(float));
        }
        w->a = std::move(a);
        w->in = part;
      } else {  // B [out, rank]: rows [begin, end)
        w->b = std::vector<float>(w->b.begin() + slice.begin * w->rank, w->b.begin() + slice.end * w->rank);
        w->out = part;
      }
    }
  }
  return sliced;
}

}  // namespace phi::worker::lora
