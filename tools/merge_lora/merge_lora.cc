#include "tools/merge_lora/merge_lora.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/dtype.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/safetensors.h"
#include "services/worker/model/safetensors_writer.h"
#include "services/worker/model/tensor_store.h"

namespace phi::tools {
namespace {

namespace fs = std::filesystem;
using worker::lora::LoraAdapter;
using worker::lora::LoraModule;
using worker::lora::LoraWeights;
using worker::model::DType;

// Files that hold weights in formats this tool does not rewrite: copying them would give the
// merged folder a second, unmerged copy of the model.
bool IsOtherWeightFormat(const std::string& name) {
  for (const char* ext : {".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

// "model.layers.<l>.self_attn.q_proj.weight" -> the adapter's weights for that layer.
std::map<std::string, const LoraWeights*, std::less<>> AdaptedTensors(const LoraAdapter& adapter) {
  std::map<std::string, const LoraWeights*, std::less<>> out;
  for (int l = 0; l < static_cast<int>(adapter.layers.size()); ++l) {
    for (int m = 0; m < worker::lora::kNumLoraModules; ++m) {
      if (const LoraWeights* w = adapter.weights(l, static_cast<LoraModule>(m))) {
        out[absl::StrCat(worker::lora::LoraModulePath(l, static_cast<LoraModule>(m)), ".weight")] = w;
      }
    }
  }
  return out;
}

// W [out, in] in `dtype` += scaling * B A, in F32 (peft: W + (B @ A) * scaling), rounded back.
absl::Status MergeInto(const worker::model::TensorInfo& info, const uint8_t* src, const LoraWeights& w,
                       std::vector<uint8_t>* dst) {
  if (info.shape != std::vector<int64_t>{w.out, w.in}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' is ", info.ShapeString(),
                                                   ", the adapter's delta is [", w.out, ", ", w.in, "]"));
  }
  const int64_t n = w.out * w.in;
  std::vector<float> row(static_cast<size_t>(w.in));
  dst->resize(static_cast<size_t>(n * worker::model::DTypeSize(info.dtype)));
  for (int64_t o = 0; o < w.out; ++o) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (int32_t r = 0; r < w.rank; ++r) {
      const float b = w.b[static_cast<size_t>(o * w.rank + r)];
      const float* a = w.a.data() + static_cast<size_t>(r) * w.in;
      for (int64_t i = 0; i < w.in; ++i) row[i] += b * a[i];
    }
    for (int64_t i = 0; i < w.in; ++i) {
      const int64_t k = o * w.in + i;
      switch (info.dtype) {
        case DType::kF32: {
          float v;
          std::memcpy(&v, src + k * 4, 4);
          v += row[i] * w.scaling;
          std::memcpy(dst->data() + k * 4, &v, 4);
          break;
        }
        case DType::kBF16: {
          uint16_t v;
          std::memcpy(&v, src + k * 2, 2);
          v = worker::model::F32ToBf16(worker::model::Bf16ToF32(v) + row[i] * w.scaling);
          std::memcpy(dst->data() + k * 2, &v, 2);
          break;
        }
        case DType::kF16: {
          uint16_t v;
          std::memcpy(&v, src + k * 2, 2);
          v = worker::model::F32ToF16(worker::model::F16ToF32(v) + row[i] * w.scaling);
          std::memcpy(dst->data() + k * 2, &v, 2);
          break;
        }
        default:
          return absl::InvalidArgumentError(absl::StrCat("tensor '", info.name, "' is ",
                                                         worker::model::DTypeName(info.dtype),
                                                         ": only F32, F16 and BF16 weights can be merged"));
      }
    }
  }
  return absl::OkStatus();
}

// Rewrites one weight file of the base into `out_path`: adapted tensors merged, others as they are.
using AdaptedMap = std::map<std::string, const LoraWeights*, std::less<>>;

absl::Status MergeFile(const worker::model::SafetensorsFile& file, const AdaptedMap& adapted,
                       const std::string& out_path, int64_t* merged) {
  std::vector<std::vector<uint8_t>> buffers;  // merged tensors' bytes, alive until written
  buffers.reserve(file.tensors().size());
  std::vector<worker::model::TensorToWrite> tensors;
  for (const auto& [name, info] : file.tensors()) {
    const uint8_t* data = file.Data(info);
    auto it = adapted.find(name);
    if (it != adapted.end()) {
      buffers.emplace_back();
      absl::Status s = MergeInto(info, data, *it->second, &buffers.back());
      if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", s.message()));
      data = buffers.back().data();
      ++*merged;
    }
    tensors.push_back({name, info.dtype, info.shape, data, info.end - info.begin});
  }
  return worker::model::WriteSafetensors(out_path, tensors, file.metadata());
}

absl::Status CheckOutDir(const MergeLoraOptions& o) {
  std::error_code ec;
  for (const auto& [dir, flag] : {std::pair{o.base_dir, "--base"}, std::pair{o.adapter_dir, "--adapter"}}) {
    if (fs::exists(o.out_dir, ec) && fs::equivalent(o.out_dir, dir, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("--out ", o.out_dir, " is the ", flag, " folder"));
    }
  }
  if (fs::exists(o.out_dir, ec) && !(fs::is_directory(o.out_dir, ec) && fs::is_empty(o.out_dir, ec))) {
    return absl::InvalidArgumentError(absl::StrCat("--out ", o.out_dir, " exists and is not an empty folder"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MergeLoraReport> MergeLoraAdapter(const MergeLoraOptions& options) {
  if (options.base_dir.empty() || options.adapter_dir.empty() || options.out_dir.empty()) {
    return absl::InvalidArgumentError("--base, --adapter and --out are all required");
  }
  PHI_RETURN_IF_ERROR(CheckOutDir(options));
  PHI_ASSIGN_OR_RETURN(worker::model::PhiConfig config, worker::model::LoadPhiConfig(options.base_dir));
  PHI_ASSIGN_OR_RETURN(auto adapter, worker::lora::LoadPeftAdapter("merge", options.adapter_dir, config,
                                                                   {.max_rank = options.max_rank}));
  PHI_ASSIGN_OR_RETURN(auto store, worker::model::TensorStore::Open(options.base_dir));
  const auto adapted = AdaptedTensors(*adapter);

  // Everything goes into a sibling folder first, renamed onto --out when complete.
  const fs::path out = fs::absolute(fs::path(options.out_dir)).lexically_normal();
  std::error_code ec;
  fs::create_directories(out.parent_path(), ec);
  std::string tmpl = (out.parent_path() / (out.filename().string() + ".partial-XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a folder beside ", out.string(), ": ", std::strerror(errno)));
  }
  const fs::path tmp(tmpl);
  fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec, ec);
  auto fail = [&](absl::Status s) {
    fs::remove_all(tmp, ec);
    return s;
  };

  MergeLoraReport report;
  for (const auto& file : store->files()) {
    const std::string name = fs::path(file->path()).filename().string();
    absl::Status s = MergeFile(*file, adapted, (tmp / name).string(), &report.merged_tensors);
    if (!s.ok()) return fail(s);
    report.weight_files.push_back(name);
  }
  if (report.merged_tensors != static_cast<int64_t>(adapted.size())) {
    return fail(absl::InvalidArgumentError(absl::StrCat(options.base_dir, ": ", adapted.size() - report.merged_tensors,
                                                        " of the ", adapted.size(),
                                                        " adapted weights are missing from the checkpoint")));
  }
  for (const auto& entry : fs::directory_iterator(options.base_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || absl::EndsWith(name, ".safetensors") || IsOtherWeightFormat(name)) continue;
    fs::copy_file(entry.path(), tmp / name, ec);
    if (ec) return fail(absl::InternalError(absl::StrCat("copying ", entry.path().string(), ": ", ec.message())));
    report.copied_files.push_back(name);
  }
  if (ec) return fail(absl::InternalError(absl::StrCat("listing ", options.base_dir, ": ", ec.message())));
  // rename(2) replaces an empty folder.
  fs::rename(tmp, out, ec);
  if (ec) {
    return fail(absl::InternalError(absl::StrCat("renaming ", tmp.string(), " to ", out.string(), ": ", ec.message())));
  }
  return report;
}

}  // namespace phi::tools
