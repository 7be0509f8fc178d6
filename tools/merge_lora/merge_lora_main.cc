// phi-merge-lora: writes a Phi model folder with a PEFT LoRA adapter merged into its weights
// (merge_lora.h), e.g. to serve a fine-tune without adapter support or benchmark it as a base.
#include <cstdio>
#include <string>

#include "services/common/config.h"
#include "tools/merge_lora/merge_lora.h"

int main(int argc, char** argv) {
  phi::tools::MergeLoraOptions o;
  int64_t max_rank = o.max_rank;
  phi::common::FlagSet flags("phi-merge-lora",
                             "Merges a PEFT LoRA adapter into its Phi base model: W' = W + scaling * B A for every "
                             "adapted layer, in F32, written in the base's dtype.");
  flags.AddString("base", "", &o.base_dir, "the base model folder (model.safetensors, or shards + index)");
  flags.AddString("adapter", "", &o.adapter_dir,
                  "the PEFT adapter folder (adapter_config.json, adapter_model.safetensors)");
  flags.AddString("out", "", &o.out_dir, "the merged model folder to write (must not exist, or be empty)");
  flags.AddInt("max-lora-rank", "", &max_rank, 1, 1 << 16, "largest adapter rank accepted (phi-worker's default: 64)");
  phi::common::ParseFlagsOrExit(flags, argc, argv);
  o.max_rank = static_cast<int32_t>(max_rank);
  auto report = phi::tools::MergeLoraAdapter(o);
  if (!report.ok()) {
    std::fprintf(stderr, "phi-merge-lora: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "phi-merge-lora: %s: %lld layers merged into %zu weight file(s), %zu other file(s) copied\n",
               o.out_dir.c_str(), static_cast<long long>(report->merged_tensors), report->weight_files.size(),
               report->copied_files.size());
  return 0;
}
