#include "services/worker/parallel/adapter_install.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/parallel/step_codec.h"

namespace phi::worker::parallel {

absl::StatusOr<absl::Status> InstallAdapterOnGroup(worker::ModelRunner* shard, Communicator* host, int32_t slot,
                                                   absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> adapter) {
  absl::Status mine = adapter.status();
  if (mine.ok()) mine = shard->SetAdapter(slot, *std::move(adapter));
  const std::string record = EncodeRankStatus(mine);
  std::vector<char> all(kRankStatusBytes * static_cast<size_t>(host->world_size()));
  PHI_RETURN_IF_ERROR(host->AllGather(record.data(), all.data(), kRankStatusBytes));
  absl::Status group = absl::OkStatus();
  for (int r = 0; r < host->world_size() && group.ok(); ++r) {
    absl::Status st = DecodeRankStatus(std::string_view(all.data() + kRankStatusBytes * static_cast<size_t>(r),
                                                        kRankStatusBytes));
    if (!st.ok()) group = absl::Status(st.code(), absl::StrCat("rank ", r, ": ", st.message()));
  }
  // Every rank saw the same records, so every rank clears the slot (one that failed to
  // install may hold the slot's previous adapter).
  if (!group.ok() && slot >= 1 && slot <= shard->max_adapter_slots()) shard->SetAdapter(slot, nullptr).IgnoreError();
  return group;
}

}  // namespace phi::worker::parallel
