// Merging a LoRA adapter into its base model's weights, offline: for every adapted linear
// layer W' = W + scaling * B A, computed in F32 and written in the checkpoint's dtype (F32,
// F16 or BF16), as peft's merge_and_unload does. The result is a plain Phi model folder that
// any server loads without adapter support. Command line: phi-merge-lora (merge_lora_main.cc),
// `./phi merge-lora`; usage in the top-level README.
//
// Usage:
//   PHI_ASSIGN_OR_RETURN(auto report, tools::MergeLoraAdapter({.base_dir = base, .adapter_dir = lora,
//                                                                .out_dir = out}));
#ifndef PHI_TOOLS_MERGE_LORA_MERGE_LORA_H_
#define PHI_TOOLS_MERGE_LORA_MERGE_LORA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace phi::tools {

struct MergeLoraOptions {
  std::string base_dir;     // a Phi model folder: model.safetensors, or shards + model.safetensors.index.json
  std::string adapter_dir;  // a PEFT LoRA adapter folder for that base (lora::LoadPeftAdapter checks it)
  std::string out_dir;      // created; must not exist or be empty
  int32_t max_rank = 64;    // the adapter's rank limit, as phi-worker's --max-lora-rank
};

struct MergeLoraReport {
  int64_t merged_tensors = 0;            // linear layers that took the adapter's delta
  std::vector<std::string> weight_files;  // written into out_dir (one, or the base's shards)
  std::vector<std::string> copied_files;  // config, generation config, tokenizer, index, ...
};

// Writes the merged model into options.out_dir: the base's weight files with the adapted
// tensors replaced (the same names, shards and dtypes), and every other top-level file of the
// base copied (weights in other formats, *.bin, *.pt, *.pth, *.gguf, are left out). Refused
// (INVALID_ARGUMENT / NOT_FOUND naming the problem) as lora::LoadPeftAdapter refuses the
// adapter for this base, and for an output folder that is the base's or the adapter's or
// is not empty. Nothing is left in out_dir on failure past its creation.
absl::StatusOr<MergeLoraReport> MergeLoraAdapter(const MergeLoraOptions& options);

}  // namespace phi::tools

#endif  // PHI_TOOLS_MERGE_LORA_MERGE_LORA_H_
