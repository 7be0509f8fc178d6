#include "services/worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "services/common/status_macros.h"

namespace phi::worker::model {
namespace {

// The reference implementation caps the header at 100 MB; a larger length is corrupt.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status ParseMetadata(const std::string& path, const nlohmann::json& v,
                           std::map<std::string, std::string>* metadata) {
  if (!v.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ is not an object"));
  for (auto m = v.begin(); m != v.end(); ++m) {
    if (!m.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ value '", m.key(), "' is not a string"));
    }
    (*metadata)[m.key()] = m.value().get<std::string>();
  }
  return absl::OkStatus();
}

// One header entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, with the byte
// span checked against the shape and the data section.
absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& path, const std::string& name,
                                            const nlohmann::json& v, uint64_t data_size) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", why));
  };
  if (!v.is_object()) return bad("entry is not an object");
  TensorInfo info;
  info.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return bad("missing string field 'dtype'");
  if (!ParseDType(dt->get<std::string>(), &info.dtype)) {
    return bad(absl::StrCat("unknown dtype '", dt->get<std::string>(), "'"));
  }
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) return bad("missing array field 'shape'");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return bad("shape holds a value that is not a non-negative integer");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > (1ull << 40) || (dim != 0 && numel > (1ull << 48) / dim)) return bad("shape is too large");
    numel *= dim;
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("'data_offsets' must be [begin, end] of non-negative integers");
  }
  info.begin = (*off)[0].get<uint64_t>();
  info.end = (*off)[1].get<uint64_t>();
  if (info.end < info.begin) {
    return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] end before begin"));
  }
  if (info.end > data_size) {
    return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] run past the data section (",
                            data_size, " bytes): file truncated?"));
  }
  const uint64_t want = numel * static_cast<uint64_t>(DTypeSize(info.dtype));
  if (info.end - info.begin != want) {
    return bad(absl::StrCat("data_offsets span ", info.end - info.begin, " bytes but shape ", info.ShapeString(),
                            " of ", DTypeName(info.dtype), " needs ", want));
  }
  return info;
}

// Overlapping byte ranges mean a corrupt (or hostile) file.
absl::Status CheckNoOverlap(const std::string& path,
                            const std::map<std::string, TensorInfo, std::less<>>& tensors) {
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : tensors) {
    if (info.end > info.begin) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", by_offset[i]->name, "' bytes [",
                                                     by_offset[i]->begin, ", ", by_offset[i]->end,
                                                     ") overlap tensor '", by_offset[i - 1]->name, "' bytes [",
                                                     by_offset[i - 1]->begin, ", ", by_offset[i - 1]->end, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t TensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(const_cast<uint8_t*>(map_), map_size_);
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (fstat(f->fd_, &st) != 0) return absl::InternalError(absl::StrCat(path, ": fstat failed"));
  f->map_size_ = static_cast<uint64_t>(st.st_size);
  if (f->map_size_ < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated: ", f->map_size_, " bytes, shorter than the 8-byte header length"));
  }
  void* p = mmap(nullptr, f->map_size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
  if (p == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  f->map_ = static_cast<const uint8_t*>(p);
  PHI_RETURN_IF_ERROR(f->ParseHeader());
  return f;
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status SafetensorsFile::ParseHeader() {
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(map_[i]) << (8 * i);
  if (header_len > map_size_ - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header length ", header_len,
                                                   " runs past the end of the file (", map_size_, " bytes)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header length ", header_len, " exceeds 100 MB"));
  }
  data_ = map_ + 8 + header_len;
  data_size_ = map_size_ - 8 - header_len;

  const char* h = reinterpret_cast<const char*>(map_ + 8);
  nlohmann::json j = nlohmann::json::parse(h, h + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path_, ": header is not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path_, ": header is not a JSON object"));

  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      PHI_RETURN_IF_ERROR(ParseMetadata(path_, it.value(), &metadata_));
      continue;
    }
    PHI_ASSIGN_OR_RETURN(TensorInfo info, ParseTensorEntry(path_, it.key(), it.value(), data_size_));
    tensors_.emplace(it.key(), std::move(info));
  }
  return CheckNoOverlap(path_, tensors_);
}

}  // namespace phi::worker::model
