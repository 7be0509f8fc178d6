// libFuzzer: any bytes as model.safetensors.index.json -> model::TensorStore::Open over a folder
// that also holds two valid shards and a truncated one (written once per process with
// SerializeSafetensors). Beyond "no crash, no leak": a refusal names the folder's index or shard
// and is INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED (a name that is not a readable file) or
// INTERNAL (one that cannot be mapped, such as "."); an accepted index maps each tensor to
// the shard that holds it, and every tensor reads back (whole and sliced, as F32 and BF16) to the
// values written.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors_writer.h"
#include "services/worker/model/tensor_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace phi::worker::model;

struct Shards {
  std::string dir;
  std::map<std::string, std::vector<float>> values;  // every tensor's elements, as F32
};

constexpr const char* kFiles[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                  "broken.safetensors", "model.safetensors.index.json"};

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  FUZZ_CHECK(out.good());
}

const Shards& FuzzShards() {
  static const Shards* shards = [] {
    auto* s = new Shards;
    // tmpfs when there is one: ext4 flushes a file truncated and rewritten on close, which would
    // make each input cost a disk write.
    const char* tmp = std::getenv("TMPDIR");
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    if (tmp != nullptr && *tmp != '\0') base = tmp;
    std::string tmpl = base + "/tensor_index_fuzz.XXXXXX";
    FUZZ_CHECK(mkdtemp(tmpl.data()) != nullptr);
    s->dir = tmpl;
    // Values exact in BF16 and F16, so every conversion path compares exactly.
    const std::vector<float> a = {1, -2, 0.5f, 3, -0.25f, 8};
    std::vector<uint16_t> b;
    for (float v : {1.0f, 2.0f, -4.0f, 0.125f}) b.push_back(F32ToBf16(v));
    const std::vector<uint16_t> c = {0x3800, 0xBC00, 0x4600, 0x0000};  // F16 0.5, -1, 6, 0
    s->values["a"] = a;
    s->values["b"] = {1, 2, -4, 0.125f};
    s->values["c"] = {0.5f, -1, 6, 0};
    s->values["d"] = {};
    auto one = SerializeSafetensors({{"a", DType::kF32, {2, 3}, a.data(), 24}, {"b", DType::kBF16, {4}, b.data(), 8}});
    auto two = SerializeSafetensors({{"c", DType::kF16, {2, 2}, c.data(), 8}, {"d", DType::kF32, {0, 3}, nullptr, 0}});
    FUZZ_CHECK(one.ok() && two.ok());
    WriteFile(s->dir + "/" + kFiles[0], *one);
    WriteFile(s->dir + "/" + kFiles[1], *two);
    WriteFile(s->dir + "/" + kFiles[2], one->substr(0, one->size() - 4));
    std::atexit([] {
      for (const char* f : kFiles) unlink((FuzzShards().dir + "/" + f).c_str());
      rmdir(FuzzShards().dir.c_str());
    });
    return s;
  }();
  return *shards;
}

std::vector<int64_t> ShapeOf(const std::string& name) {
  if (name == "a") return {2, 3};
  if (name == "b") return {4};
  if (name == "c") return {2, 2};
  return {0, 3};
}

// Reads `slice` as F32 and as BF16 and compares with the written values.
void CheckRead(const TensorStore& store, const std::string& name, const Slice& slice) {
  const std::vector<int64_t> shape = ShapeOf(name);
  const std::vector<float>& all = FuzzShards().values.at(name);
  std::vector<float> want;
  const int64_t cols = shape.size() > 1 ? shape[1] : 1;
  for (int64_t i = 0; i < static_cast<int64_t>(all.size()); ++i) {
    const int64_t row = shape.size() > 1 ? i / cols : i;
    const int64_t col = shape.size() > 1 ? i % cols : 0;
    const int64_t at = slice.axis == 0 ? row : col;
    if (slice.axis < 0 || (at >= slice.begin && at < slice.end)) want.push_back(all[i]);
  }
  std::vector<float> f32(want.size() + 1);
  std::vector<uint16_t> bf16(want.size() + 1);
  const int64_t n = static_cast<int64_t>(want.size());
  FUZZ_CHECK(store.Read(name, shape, slice, DType::kF32, f32.data(), n).ok());
  FUZZ_CHECK(store.Read(name, shape, slice, DType::kBF16, bf16.data(), n).ok());
  for (int64_t i = 0; i < n; ++i) {
    FUZZ_CHECK(f32[i] == want[i]);
    FUZZ_CHECK(Bf16ToF32(bf16[i]) == want[i]);
  }
  // A wrong element count or shape is refused, never read.
  FUZZ_CHECK(!store.Read(name, shape, slice, DType::kF32, f32.data(), n + 1).ok());
  FUZZ_CHECK(!store.Check(name, {7}).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Shards& shards = FuzzShards();
  WriteFile(shards.dir + "/model.safetensors.index.json", std::string(reinterpret_cast<const char*>(data), size));
  auto store = TensorStore::Open(shards.dir);
  if (!store.ok()) {
    const absl::StatusCode code = store.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
               code == absl::StatusCode::kPermissionDenied || code == absl::StatusCode::kInternal);
    FUZZ_CHECK(store.status().message().find(shards.dir + "/") == 0);
    return 0;
  }
  for (const auto& [name, values] : shards.values) {
    auto entry = (*store)->Find(name);
    if (!entry.ok()) {
      FUZZ_CHECK(entry.status().code() == absl::StatusCode::kNotFound);
      continue;
    }
    FUZZ_CHECK(entry->info->name == name && entry->file->Find(name) == entry->info);
    const std::string shard = name == "a" || name == "b" ? kFiles[0] : kFiles[1];
    FUZZ_CHECK(entry->file->path() == shards.dir + "/" + shard);
    FUZZ_CHECK((*store)->Check(name, ShapeOf(name)).ok());
    CheckRead(**store, name, Slice::Whole());
    const std::vector<int64_t> shape = ShapeOf(name);
    for (int axis = 0; axis < static_cast<int>(shape.size()); ++axis) {
      for (int64_t b = 0; b < shape[axis]; ++b) {
        for (int64_t e = b + 1; e <= shape[axis]; ++e) CheckRead(**store, name, Slice{axis, b, e});
      }
    }
  }
  return 0;
}
