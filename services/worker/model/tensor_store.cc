#include "services/worker/model/tensor_store.h"

#include <sys/stat.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/worker/model/phi_config.h"
#include "services/common/status_macros.h"

namespace phi::worker::model {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string ShapeStr(const std::vector<int64_t>& shape) {
  TensorInfo t;
  t.shape = shape;
  return t.ShapeString();
}

// Converts n elements from src (dtype in) to dst (dtype out: F32 or BF16).
void Convert(const uint8_t* src, DType in, void* dst, DType out, int64_t n) {
  if (in == out) {
    std::memcpy(dst, src, static_cast<size_t>(n) * DTypeSize(in));
    return;
  }
  auto load = [&](int64_t i) -> float {
    switch (in) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        return f;
      }
      case DType::kBF16: {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        return Bf16ToF32(h);
      }
      default: {  // kF16
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        return F16ToF32(h);
      }
    }
  };
  if (out == DType::kF32) {
    float* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = load(i);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = F32ToBf16(load(i));
  }
}

}  // namespace

std::vector<int64_t> Slice::Apply(const std::vector<int64_t>& shape) const {
  std::vector<int64_t> s = shape;
  if (axis >= 0 && axis < static_cast<int>(s.size())) s[axis] = end - begin;
  return s;
}

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::Open(const std::string& model_dir) {
  auto store = std::make_unique<TensorStore>();
  store->model_dir_ = model_dir;
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  const std::string single_path = model_dir + "/model.safetensors";
  if (FileExists(index_path)) {
    PHI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a valid JSON object"));
    }
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object field 'weight_map'"));
    }
    std::map<std::string, const SafetensorsFile*> opened;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry for tensor '", it.key(), "' is not a file name"));
      }
      const std::string file = it.value().get<std::string>();
      // A NUL would end the name open() sees before the one reported ("a\u0000b" opens "a").
      if (file.empty() || file.find('/') != std::string::npos || file.find('\0') != std::string::npos ||
          file == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", it.key(), "' maps to file '", file,
                                                       "', which is not a plain file name in the model folder"));
      }
      const SafetensorsFile* f = nullptr;
      if (auto o = opened.find(file); o != opened.end()) {
        f = o->second;
      } else {
        auto sf = SafetensorsFile::Open(model_dir + "/" + file);
        if (!sf.ok()) {
          return absl::Status(sf.status().code(),
                              absl::StrCat(sf.status().message(), " (shard named by ", index_path, ")"));
        }
        f = sf->get();
        store->files_.push_back(std::move(*sf));
        opened[file] = f;
      }
      const TensorInfo* info = f->Find(it.key());
      if (info == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", it.key(), "' is mapped to ",
                                                       f->path(), " but that file does not hold it"));
      }
      store->index_[it.key()] = Entry{f, info};
    }
  } else if (FileExists(single_path)) {
    PHI_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single_path));
    for (const auto& [name, info] : f->tensors()) store->index_[name] = Entry{f.get(), &info};
    store->files_.push_back(std::move(f));
  } else {
    return absl::NotFoundError(absl::StrCat(model_dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  return store;
}

absl::StatusOr<TensorStore::Entry> TensorStore::Find(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat(model_dir_, ": missing tensor '", name, "'"));
  return it->second;
}

absl::Status TensorStore::Check(absl::string_view name, const std::vector<int64_t>& shape) const {
  PHI_ASSIGN_OR_RETURN(Entry e, Find(name));
  if (e.info->dtype != DType::kF32 && e.info->dtype != DType::kF16 && e.info->dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(e.file->path(), ": tensor '", name, "' has dtype ",
                                                   DTypeName(e.info->dtype), "; expected F32, F16 or BF16"));
  }
  if (e.info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(e.file->path(), ": tensor '", name, "' has shape ",
                                                   e.info->ShapeString(), "; expected ", ShapeStr(shape)));
  }
  return absl::OkStatus();
}

absl::Status TensorStore::Read(absl::string_view name, const std::vector<int64_t>& shape, const Slice& slice,
                               DType out_dtype, void* out, int64_t out_elements) const {
  PHI_RETURN_IF_ERROR(Check(name, shape));
  PHI_ASSIGN_OR_RETURN(Entry e, Find(name));
  if (out_dtype != DType::kF32 && out_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': output dtype must be F32 or BF16"));
  }
  const int rank = static_cast<int>(shape.size());
  if (slice.axis >= rank || (slice.axis >= 0 && (slice.begin < 0 || slice.end > shape[slice.axis] ||
                                                 slice.begin >= slice.end))) {
    return absl::InvalidArgumentError(absl::StrCat(e.file->path(), ": tensor '", name, "' slice axis ", slice.axis,
                                                   " [", slice.begin, ", ", slice.end, ") outside shape ",
                                                   ShapeStr(shape)));
  }
  const std::vector<int64_t> out_shape = slice.Apply(shape);
  int64_t n = 1;
  for (int64_t d : out_shape) n *= d;
  if (n != out_elements) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': output holds ", out_elements,
                                                   " elements, slice needs ", n));
  }
  const uint8_t* src = e.file->Data(*e.info);
  const int in_size = DTypeSize(e.info->dtype);
  const int out_size = DTypeSize(out_dtype);
  uint8_t* dst = static_cast<uint8_t*>(out);
  if (slice.axis < 0) {
    Convert(src, e.info->dtype, dst, out_dtype, n);
    return absl::OkStatus();
  }
  // Row-major: `outer` blocks, each holding `dim` slabs of `inner` elements along the axis.
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < slice.axis; ++i) outer *= shape[i];
  for (int i = slice.axis + 1; i < rank; ++i) inner *= shape[i];
  const int64_t dim = shape[slice.axis];
  const int64_t take = (slice.end - slice.begin) * inner;
  for (int64_t o = 0; o < outer; ++o) {
    const uint8_t* s = src + ((o * dim + slice.begin) * inner) * in_size;
    Convert(s, e.info->dtype, dst + o * take * out_size, out_dtype, take);
  }
  return absl::OkStatus();
}

}  // namespace phi::worker::model
