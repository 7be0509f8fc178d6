#include "services/worker/backends/cuda/cuda_model_runner.h"

#include <cuda_runtime.h>

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/worker/backends/cuda/status_adapter.h"
#include "services/common/status_macros.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/phi_fused_weights.h"
#include "services/worker/model/tokenizer_size.h"

namespace phi::worker::cuda {
namespace {

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ")"));
}

// Reads `name` as BF16 and copies it to `dst` (rows x cols, destination row pitch in
// elements), so [dense | fc2] can be laid side by side along K.
absl::Status UploadBf16(const model::PhiCheckpoint& ck, const std::string& name, bf16* dst,
                        int64_t rows, int64_t cols, int64_t dst_pitch) {
  std::vector<uint16_t> host(static_cast<size_t>(rows * cols));
  PHI_RETURN_IF_ERROR(ck.ReadInto(name, model::DType::kBF16, host.data(), rows * cols));
  return CudaError(cudaMemcpy2D(dst, dst_pitch * 2, host.data(), cols * 2, cols * 2, rows,
                                cudaMemcpyHostToDevice),
                   name.c_str());
}

absl::Status UploadF32(const std::vector<float>& v, float* dst, const char* what) {
  return CudaError(cudaMemcpy(dst, v.data(), v.size() * 4, cudaMemcpyHostToDevice), what);
}

static_assert(lora::kNumLoraModules == kLoraTargets);
static_assert(static_cast<int>(lora::LoraModule::kQ) == static_cast<int>(LoraTarget::kQ) &&
              static_cast<int>(lora::LoraModule::kK) == static_cast<int>(LoraTarget::kK) &&
              static_cast<int>(lora::LoraModule::kV) == static_cast<int>(LoraTarget::kV) &&
              static_cast<int>(lora::LoraModule::kDense) == static_cast<int>(LoraTarget::kDense) &&
              static_cast<int>(lora::LoraModule::kFc1) == static_cast<int>(LoraTarget::kFc1) &&
              static_cast<int>(lora::LoraModule::kFc2) == static_cast<int>(LoraTarget::kFc2));

// The model's view of an adapter (already this rank's slice): spans into its matrices.
PhiCudaAdapter AdapterView(const lora::LoraAdapter& a) {
  PhiCudaAdapter v;
  v.layers.resize(a.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (int m = 0; m < kLoraTargets; ++m) {
      const lora::LoraWeights* w = a.weights(static_cast<int>(l), static_cast<lora::LoraModule>(m));
      if (w == nullptr) continue;
      v.layers[l][m] = {w->rank, w->scaling, w->a, w->b};
    }
  }
  return v;
}

}  // namespace

// The communicator's collectives for the model. A failure keeps its absl::Status (e.g.
// UNAVAILABLE for a dead peer, DEADLINE_EXCEEDED for a stalled one) so that Run returns it
// and the group turns NOT_SERVING with the right code; the communicator is broken afterwards.
class CudaModelRunner::Collectives final : public PhiCudaCollectives {
 public:
  Collectives(parallel::Communicator* comm, std::function<absl::Status()> synchronize)
      : comm_(comm), synchronize_(std::move(synchronize)) {}
  CudaStatus AllReduceSum(float* data, size_t count, cudaStream_t) override {
    return Keep(comm_->AllReduceSum(data, count, parallel::DataType::kFloat32));
  }
  CudaStatus AllGather(const void* in, void* out, size_t bytes_per_rank, cudaStream_t) override {
    return Keep(comm_->AllGather(in, out, bytes_per_rank));
  }
  CudaStatus Synchronize(cudaStream_t) override {
    return synchronize_ ? Keep(synchronize_()) : CudaStatus();
  }
  const absl::Status& failure() const { return failure_; }

 private:
  CudaStatus Keep(absl::Status st) {
    if (st.ok()) return {};
    if (failure_.ok()) failure_ = st;
    return CudaStatus::Error(std::string(comm_->name()) + " collective failed: " + st.ToString());
  }
  parallel::Communicator* comm_;
  std::function<absl::Status()> synchronize_;
  absl::Status failure_;
};

CudaModelRunner::~CudaModelRunner() = default;

absl::StatusOr<int> CudaModelRunner::VisibleGpus() {
  int devices = 0;
  // No GPU (or no driver) is the common deployment mistake: say so in words, not only as
  // cudaErrorNoDevice / cudaErrorInsufficientDriver.
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA backend: no CUDA GPU is visible to this process (cudaGetDeviceCount: ",
        e == cudaSuccess ? "0 devices" : absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)),
        "); check the NVIDIA driver, CUDA_VISIBLE_DEVICES and the container's GPU request"));
  }
  return devices;
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const std::string& model_dir, const CudaRunnerOptions& options) {
  PHI_ASSIGN_OR_RETURN(auto ck, model::PhiCheckpoint::Open(
                                    model_dir, model::ShardSpec{options.rank, options.world_size}));
  PHI_ASSIGN_OR_RETURN(auto runner, Create(*ck, options));
  PHI_ASSIGN_OR_RETURN(int32_t tok_size, model::LoadTokenizerVocabSize(model_dir));
  if (tok_size > runner->shape_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tokenizer has ", tok_size,
                                                   " ids but config.json vocab_size is ",
                                                   runner->shape_.vocab_size));
  }
  if (tok_size > 0) runner->shape_.tokenizer_vocab_size = tok_size;
  return runner;
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const model::PhiCheckpoint& checkpoint, const CudaRunnerOptions& options) {
  if (checkpoint.shard().rank != options.rank ||
      checkpoint.shard().world_size != options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint opened for shard ", checkpoint.shard().rank, " of ",
        checkpoint.shard().world_size, " but the CUDA runner is rank ", options.rank, " of ",
        options.world_size));
  }
  if (options.world_size > 1 && !options.make_comm) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA runner: world_size ", options.world_size, " needs a communicator (make_comm)"));
  }
  std::unique_ptr<CudaModelRunner> r(new CudaModelRunner());
  r->options_ = options;
  PHI_RETURN_IF_ERROR(r->Load(checkpoint));
  return r;
}

absl::Status CudaModelRunner::Load(const model::PhiCheckpoint& ck) {
  const model::PhiConfig& c = ck.config();
  generation_ = ck.generation();
  config_ = c;
  PHI_RETURN_IF_ERROR(CheckSupported(c, options_.model));
  PHI_RETURN_IF_ERROR(SelectDevice(ck.shard().rank));
  const PhiCudaConfig pc = ModelConfig(c, ck.shard().rank, ck.shard().world_size);
  PHI_RETURN_IF_ERROR(ToAbslStatus(PhiCudaModel::Create(pc, options_.model, &model_)));
  shape_.vocab_size = c.vocab_size;
  shape_.tokenizer_vocab_size = c.vocab_size;
  shape_.max_position_embeddings = c.max_position_embeddings;
  shape_.num_hidden_layers = c.num_hidden_layers;
  shape_.num_attention_heads = c.num_attention_heads;
  shape_.head_dim = c.head_dim();
  PHI_RETURN_IF_ERROR(UploadWeights(ck, pc));
  if (options_.make_comm) PHI_RETURN_IF_ERROR(JoinGroup(pc));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::CheckSupported(const model::PhiConfig& c, const PhiCudaOptions& mo) {
  if (c.head_dim() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA backend: head_dim (hidden_size / num_attention_heads) must be 64, got ",
        c.head_dim()));
  }
  if (c.num_key_value_heads != c.num_attention_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA backend: num_key_value_heads must equal num_attention_heads, got ",
        c.num_key_value_heads, " and ", c.num_attention_heads));
  }
  if (mo.kv_dtype == KvCacheDtype::kFp8E4m3 && !(std::isfinite(mo.kv_scale) && mo.kv_scale > 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA runner: kv_scale must be finite and > 0 for the fp8 KV cache, got ", mo.kv_scale));
  }
  return absl::OkStatus();
}

absl::Status CudaModelRunner::SelectDevice(int rank) {
  PHI_ASSIGN_OR_RETURN(const int devices, VisibleGpus());
  // -1: one GPU per rank, rank modulo the visible GPUs (a Kubernetes pod sees only its own).
  if (options_.device == -1) options_.device = rank % devices;
  if (options_.device < 0 || options_.device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options_.device,
                                                   " requested, ", devices, " present"));
  }
  return CudaError(cudaSetDevice(options_.device), "cudaSetDevice");
}

// Heads and fc1 columns are this rank's share (PhiCheckpoint::Open checked the split is even).
PhiCudaConfig CudaModelRunner::ModelConfig(const model::PhiConfig& c, int rank, int world) {
  PhiCudaConfig pc;
  pc.vocab_size = c.vocab_size;
  pc.hidden_size = c.hidden_size;
  pc.intermediate_size = c.intermediate_size / world;
  pc.num_layers = c.num_hidden_layers;
  pc.num_heads = c.num_attention_heads / world;
  pc.head_dim = c.head_dim();
  pc.rotary_dim = c.rotary_dim();
  pc.max_positions = c.max_position_embeddings;
  pc.layer_norm_eps = static_cast<float>(c.layer_norm_eps);
  pc.rope_theta = static_cast<float>(c.rope_theta);
  pc.tp_rank = rank;
  pc.tp_world = world;
  return pc;
}

absl::Status CudaModelRunner::UploadWeights(const model::PhiCheckpoint& ck, const PhiCudaConfig& pc) {
  const PhiCudaWeights& w = model_->weights();
  const int64_t H = pc.hidden_size, V = pc.local_vocab();
  PHI_RETURN_IF_ERROR(UploadBf16(ck, "model.embed_tokens.weight", w.embed, V, H, H));
  for (int i = 0; i < pc.num_layers; ++i) PHI_RETURN_IF_ERROR(UploadLayer(ck, pc, i));
  PHI_RETURN_IF_ERROR(UploadBf16(ck, "model.final_layernorm.weight", w.final_ln_w, 1, H, H));
  PHI_RETURN_IF_ERROR(UploadBf16(ck, "model.final_layernorm.bias", w.final_ln_b, 1, H, H));
  PHI_RETURN_IF_ERROR(UploadBf16(ck, "lm_head.weight", w.lm_w, V, H, H));
  PHI_ASSIGN_OR_RETURN(std::vector<float> lm_b, ck.ReadF32("lm_head.bias"));
  PHI_RETURN_IF_ERROR(UploadF32(lm_b, w.lm_b, "lm_head.bias"));
  return CudaError(cudaDeviceSynchronize(), "weight upload");
}

absl::Status CudaModelRunner::UploadLayer(const model::PhiCheckpoint& ck, const PhiCudaConfig& pc,
                                          int i) {
  const PhiCudaLayer& L = model_->weights().layers[i];
  // Local sizes: Ha = this rank's attention width (its heads x head_dim), I its fc1 columns;
  // H is the (replicated) hidden size.
  const int64_t H = pc.hidden_size, Ha = static_cast<int64_t>(pc.num_heads) * pc.head_dim,
                I = pc.intermediate_size;
  const int64_t k2 = pc.w2_cols();
  const std::string p = absl::StrCat("model.layers.", i, ".");
  PHI_RETURN_IF_ERROR(UploadBf16(ck, p + "input_layernorm.weight", L.ln_w, 1, H, H));
  PHI_RETURN_IF_ERROR(UploadBf16(ck, p + "input_layernorm.bias", L.ln_b, 1, H, H));
  // W1 = [q; k; v; fc1] rows, b1 likewise (model/phi_fused_weights.h).
  for (const model::FusedPart& part : model::FusedInParts(i, Ha, I)) {
    PHI_RETURN_IF_ERROR(UploadBf16(ck, part.weight, L.w1 + part.offset * H, part.size, H, H));
    PHI_RETURN_IF_ERROR(UploadBf16(ck, part.bias, L.b1 + part.offset, 1, part.size, part.size));
  }
  // W2 = [dense | fc2] along K; b2 = dense.bias + fc2.bias (F32). dense and fc2 are split by
  // input columns; their biases are replicated (the model adds b2 on rank 0 only, before the
  // all-reduce).
  for (const model::FusedPart& part : model::FusedOutParts(i, Ha, I)) {
    PHI_RETURN_IF_ERROR(UploadBf16(ck, part.weight, L.w2 + part.offset, H, part.size, k2));
  }
  PHI_ASSIGN_OR_RETURN(std::vector<float> b2, model::FusedOutBias(ck, i));
  return UploadF32(b2, L.b2, "b2");
}

absl::Status CudaModelRunner::JoinGroup(const PhiCudaConfig& pc) {
  PHI_ASSIGN_OR_RETURN(CudaRunnerOptions::Comm made, options_.make_comm(options_.device, model_->stream()));
  comm_ = std::move(made.comm);
  if (comm_ == nullptr || comm_->rank() != pc.tp_rank || comm_->world_size() != pc.tp_world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA runner: communicator is rank ", comm_ ? comm_->rank() : -1, " of ",
        comm_ ? comm_->world_size() : -1, ", the shard is rank ", pc.tp_rank, " of ", pc.tp_world));
  }
  collectives_ = std::make_unique<Collectives>(comm_.get(), std::move(made.synchronize));
  return ToAbslStatus(model_->SetCollectives(collectives_.get()));
}

int64_t CudaModelRunner::KvBlockBytes(int32_t block_size) const {
  return model_->kv_block_bytes_for(block_size);
}

absl::StatusOr<int32_t> CudaModelRunner::KvBlocksThatFit(int32_t block_size) const {
  if (block_size <= 0) return absl::InvalidArgumentError("block_size must be > 0");
  size_t free_b = 0, total_b = 0;
  PHI_RETURN_IF_ERROR(CudaError(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo"));
  const int64_t per = KvBlockBytes(block_size);
  const int64_t blocks = static_cast<int64_t>(options_.kv_memory_fraction * free_b) / per - 1;
  const int64_t one_seq = (shape_.max_position_embeddings + block_size - 1) / block_size;
  if (blocks < one_seq) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache: ", free_b, " bytes free of ", total_b, " after ", model_->weight_bytes(),
        " bytes of weights; ", options_.kv_memory_fraction, " of it holds ", blocks < 0 ? 0 : blocks,
        " blocks of ", per, " bytes (", kv_cache_dtype_name(options_.model.kv_dtype),
        " KV), one sequence of ", shape_.max_position_embeddings,
        " positions needs ", one_seq));
  }
  return static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX));
}

absl::Status CudaModelRunner::AllocateKvCache(const KvCacheSpec& spec) {
  return ToAbslStatus(model_->AllocateKvCache(spec.num_blocks, spec.block_size));
}

absl::Status CudaModelRunner::Run(const StepBatch& batch, PhiStepOutput* out) {
  std::vector<PhiSeqInput> in(batch.seqs.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const SequenceStep& s = batch.seqs[i];
    in[i].tokens = s.tokens;
    in[i].start_pos = s.start_pos;
    in[i].block_table = s.block_table;
    in[i].all_logits = s.all_logits;
    // More candidates than the kernel selects: the whole row.
    if (!s.all_logits && s.num_candidates > 0 && s.num_candidates <= kMaxTopCandidates) {
      in[i].num_candidates = s.num_candidates;
      in[i].candidate_lse = s.logprobs;
    }
    in[i].adapter_slot = s.adapter_slot;
  }
  const CudaStatus st = model_->Forward(in, out);
  // A collective's own status (UNAVAILABLE, DEADLINE_EXCEEDED) over the INTERNAL it became.
  if (!st.ok() && collectives_ != nullptr && !collectives_->failure().ok()) {
    return collectives_->failure();
  }
  return ToAbslStatus(st);
}

absl::Status CudaModelRunner::SetAdapter(int32_t slot,
                                         std::shared_ptr<const lora::LoraAdapter> adapter) {
  if (adapter == nullptr) return ToAbslStatus(model_->SetAdapter(slot, nullptr));
  const std::shared_ptr<const lora::LoraAdapter> local = lora::SliceForShard(
      *adapter, config_, model::ShardSpec{options_.rank, options_.world_size});
  const PhiCudaAdapter view = AdapterView(*local);
  return ToAbslStatus(model_->SetAdapter(slot, &view));
}

absl::Status CudaModelRunner::Step(const StepBatch& batch, StepLogits* out) {
  PhiStepOutput o;
  PHI_RETURN_IF_ERROR(Run(batch, &o));
  const size_t B = batch.seqs.size();
  std::vector<bool> whole;
  PHI_RETURN_IF_ERROR(ChooseCandidateRows(batch, o.candidate_record, o.candidate_records, o.candidate_stride,
                                          o.candidate_ranks, o.candidate_slices, out, &whole, &logits_stats_));
  // Where each whole sequence's rows sit in the device logits. A tensor-parallel step leaves
  // candidate rows unassembled; the ones their candidates did not cover are gathered now
  // (every rank reaches the same verdicts from the same gathered records).
  std::vector<int32_t> device_first(B, -1), gather;
  int32_t next = o.assembled_rows;
  for (size_t i = 0; i < B; ++i) {
    if (!whole[i]) continue;
    const int32_t at = o.logits_row[o.first_row[i]];
    if (at >= 0) {
      device_first[i] = at;
      continue;
    }
    device_first[i] = next;
    for (int32_t k = 0; k < o.num_rows[i]; ++k) gather.push_back(o.first_row[i] + k);
    next += o.num_rows[i];
  }
  if (!gather.empty()) {
    const CudaStatus st = model_->GatherLogitRows(gather, o.assembled_rows);
    if (!st.ok() && collectives_ != nullptr && !collectives_->failure().ok()) return collectives_->failure();
    PHI_RETURN_IF_ERROR(ToAbslStatus(st));
  }
  std::vector<LogitsRowCopy> copies;
  LayOutWholeRows(whole, device_first, o.num_rows, shape_.vocab_size, out, &copies, &logits_stats_);
  for (const LogitsRowCopy& c : copies) {
    PHI_RETURN_IF_ERROR(ToAbslStatus(model_->CopyLogits(
        c.device_first, c.rows, out->data.data() + static_cast<size_t>(c.host_first) * shape_.vocab_size)));
  }
  return absl::OkStatus();
}

}  // namespace phi::worker::cuda
