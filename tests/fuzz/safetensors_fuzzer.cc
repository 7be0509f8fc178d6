// libFuzzer: any bytes as a .safetensors file -> model::SafetensorsFile::Open, which maps the file
// and validates its header. The bytes go through a memfd (Open reads only paths), so the fuzzer
// exercises the real mmap path. Beyond "no crash, no leak": a refusal is INVALID_ARGUMENT naming
// the file; an accepted file's tensors each lie inside the data section, span exactly
// shape x dtype bytes, do not overlap, and every byte of them can be read.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// One memfd for the process, rewritten per input.
const std::string& FuzzFilePath() {
  static const std::string path = [] {
    const int fd = memfd_create("fuzz.safetensors", 0);
    FUZZ_CHECK(fd >= 0);
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

int FuzzFileFd() { return std::stoi(FuzzFilePath().substr(sizeof("/proc/self/fd/") - 1)); }

void WriteAll(int fd, const uint8_t* data, size_t size) {
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0);
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace phi::worker::model;
  const std::string& path = FuzzFilePath();
  WriteAll(FuzzFileFd(), data, size);
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(file.status().message().find(path + ": ") == 0);
    return 0;
  }
  FUZZ_CHECK(size >= 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{data[i]} << (8 * i);
  FUZZ_CHECK(header_len <= size - 8);
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, info] : (*file)->tensors()) {
    FUZZ_CHECK(name == info.name);
    FUZZ_CHECK(name != "__metadata__");
    FUZZ_CHECK((*file)->Find(name) == &info);
    FUZZ_CHECK(info.begin <= info.end && info.end <= data_size);
    uint64_t numel = 1;
    for (int64_t d : info.shape) {
      FUZZ_CHECK(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(info.end - info.begin == numel * static_cast<uint64_t>(DTypeSize(info.dtype)));
    FUZZ_CHECK(static_cast<uint64_t>(info.NumElements()) == numel);
    // The mapping is outside ASan's view: reading each byte is what proves it is mapped, and
    // comparing with the input proves the offsets are the data section's.
    const uint8_t* p = (*file)->Data(info);
    for (uint64_t i = 0; i < info.end - info.begin; ++i) FUZZ_CHECK(p[i] == data[8 + header_len + info.begin + i]);
    if (info.end > info.begin) spans.emplace_back(info.begin, info.end);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) FUZZ_CHECK(spans[i].first >= spans[i - 1].second);
  return 0;
}
