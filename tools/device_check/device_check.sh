#!/usr/bin/env bash
# One call on the GPU machine: build the CUDA library, its tests and the benchmark standalone
# (no Abseil/gRPC there; GoogleTest from sources carried in .device/googletest), run the CPU
# and GPU tests, the benchmark, the transformers baseline and a memcheck pass over the kernel
# tests. Logs go to $OUT (or ./device_out). Prepare .device/ with prepare_device_carry.sh, then
# run from the repository root:
#   bash tools/device_check/device_check.sh [quick|oracle]
# `oracle`: only the build, the kernel and runner GPU tests and the oracle suite (cuda_oracle_gpu_test on the
# golden data carried in .device/cuda_oracle, and on data generated here by the device's
# transformers when make_cuda_oracle.py runs under it).
set -u
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
B=/tmp/phi_cuda_build
QUICK=${1:-}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
# The device call's limit: a step that no longer fits is skipped (and says so) and each
# timeout is capped to what is left, so the summary always ends with what did run. Order: the
# tests and the oracle suite, the benchmark table and the transformers baseline (issue 8's
# "done when"), then the end-to-end bench, A/B lines, FP8, memcheck and torch.compile.
BUDGET=${BUDGET:-540}
have() {  # have SECONDS WHAT: true when SECONDS (a typical run) fit in what is left of BUDGET
  if [ $((BUDGET - SECONDS)) -ge "$1" ]; then return 0; fi
  log "skipped (budget: $((BUDGET - SECONDS)) s left, needs $1): $2"
  return 1
}
cap() {  # cap SECONDS: a step's timeout, never past the budget
  local left=$((BUDGET - SECONDS - 5))
  echo $(( $1 < left ? $1 : (left > 1 ? left : 1) ))
}

log "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv \
  | tee -a "$OUT/summary.txt"
nvcc --version | tail -1 | tee -a "$OUT/summary.txt"

# Abseil (runner tests) and, for the prebuilt binaries, libcudart come from the carried sysroot.
export LD_LIBRARY_PATH=$PWD/.device/sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SYSROOT=""
[ -d .device/sysroot ] && SYSROOT="-DPHI_SYSROOT=$PWD/.device/sysroot"
# Binaries built here by prepare_device_carry.sh (sm_90) save the build's device minutes;
# they are used when they were built from these sources (tools/device_check/source_hash.sh) and start
# on this machine, else everything is built.
if [ -x .device/bin/cuda_kernels_gpu_test ] &&
   [ "$(cat .device/bin/SOURCES 2>/dev/null)" = "$(bash tools/device_check/source_hash.sh)" ] &&
   .device/bin/cuda_kernels_gpu_test --gtest_list_tests > /dev/null 2>&1; then
  B=$PWD/.device/bin
  RUNNER_OK=0
  [ -x $B/cuda_model_runner_gpu_test ] && RUNNER_OK=1
  log "prebuilt binaries from .device/bin ($(cat $B/BUILT 2>/dev/null))"
else
log "build"
if ! { cmake -S bench/cuda/standalone -B $B -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90 \
         -DPHI_GTEST_SRC=$PWD/.device/googletest $SYSROOT &&
       cmake --build $B -j16 --target cuda_kernels_cpu_test cuda_kernels_gpu_test phi_cuda_bench phi_cuda_lora_bench \
         cuda_top_candidates_cpu_test cuda_top_candidates_gpu_test \
         cuda_kv_fp8_cpu_test cuda_kv_fp8_gpu_test; } \
     > "$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"; log "BUILD FAILED"; exit 1
fi
log "build ok"
# The runner test needs the carried Abseil; its failure to build must not cost the rest.
RUNNER_OK=0  # (prebuilt: set above)
if [ -n "$SYSROOT" ] && cmake --build $B -j16 --target cuda_model_runner_gpu_test cuda_oracle_gpu_test \
     cuda_runner_candidates_gpu_test cuda_tp_candidates_gpu_test cuda_runner_lora_gpu_test cuda_engine_bench \
     >> "$OUT/build.log" 2>&1; then
  RUNNER_OK=1
else
  log "runner test not built (see build.log)"
fi
fi

if [ "$QUICK" = oracle ]; then
  log "oracle suite"
  [ $RUNNER_OK = 1 ] || { tail -30 "$OUT/build.log"; log "ORACLE NOT BUILT"; exit 1; }
  python3 -c "import transformers, torch; print('device transformers', transformers.__version__, 'torch', torch.__version__)" \
    2>&1 | tee -a "$OUT/summary.txt"
  PYTHONUNBUFFERED=1 timeout 90 python3 tests/unit/worker/cuda/make_cuda_oracle.py --out /tmp/phi_cuda_oracle_dev \
    > "$OUT/oracle_gen.log" 2>&1
  GEN_RC=$?
  echo "make_cuda_oracle.py on the device rc=$GEN_RC" | tee -a "$OUT/summary.txt"
  {
    timeout 90 $B/cuda_kernels_gpu_test
    echo "gpu tests rc=$?"
    export LD_LIBRARY_PATH=$PWD/.device/sysroot/lib
    PHI_TEST_MODEL_DIR=$PWD/.device/cuda_tiny_model timeout 60 $B/cuda_model_runner_gpu_test
    echo "runner tests rc=$?"
    echo "--- oracle data carried (transformers 4.44.2, torch 1.13 CPU)"
    PHI_CUDA_ORACLE_DIR=$PWD/.device/cuda_oracle timeout 60 $B/cuda_oracle_gpu_test
    echo "oracle (carried data) rc=$?"
    if [ $GEN_RC = 0 ]; then
      echo "--- oracle data generated on the device"
      PHI_CUDA_ORACLE_DIR=/tmp/phi_cuda_oracle_dev timeout 60 $B/cuda_oracle_gpu_test
      echo "oracle (device data) rc=$?"
    fi
  } > "$OUT/tests.log" 2>&1
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|rc=|PASSED|Failure|rel norm|GPU==|^---" "$OUT/tests.log" \
    | tee -a "$OUT/summary.txt"
  log "done"
  exit 0
fi

log "tests"
{
  timeout 30 $B/cuda_kernels_cpu_test
  echo "cpu tests rc=$?"
  timeout 90 $B/cuda_kernels_gpu_test --gtest_output=xml:$OUT/gpu_tests.xml
  echo "gpu tests rc=$?"
  timeout 30 $B/cuda_top_candidates_cpu_test
  echo "top candidates cpu tests rc=$?"
  timeout 60 $B/cuda_top_candidates_gpu_test
  echo "top candidates gpu tests rc=$?"
  timeout 30 $B/cuda_kv_fp8_cpu_test
  echo "fp8 kv cpu tests rc=$?"
  timeout 60 $B/cuda_kv_fp8_gpu_test
  echo "fp8 kv gpu tests rc=$?"
  if [ $RUNNER_OK = 1 ]; then
    LD_LIBRARY_PATH=$PWD/.device/sysroot/lib PHI_TEST_MODEL_DIR=$PWD/.device/cuda_tiny_model \
      timeout 60 $B/cuda_model_runner_gpu_test
    echo "runner tests rc=$?"
    LD_LIBRARY_PATH=$PWD/.device/sysroot/lib PHI_TEST_MODEL_DIR=$PWD/.device/cuda_tiny_model \
      timeout 60 $B/cuda_runner_candidates_gpu_test
    echo "runner candidates tests rc=$?"
    LD_LIBRARY_PATH=$PWD/.device/sysroot/lib PHI_TEST_MODEL_DIR=$PWD/.device/cuda_tiny_model \
      timeout 60 $B/cuda_tp_candidates_gpu_test
    echo "tp candidates tests rc=$?"
    LD_LIBRARY_PATH=$PWD/.device/sysroot/lib PHI_TEST_MODEL_DIR=$PWD/.device/cuda_tiny_model \
      timeout 60 $B/cuda_runner_lora_gpu_test
    echo "runner LoRA tests rc=$?"
    # The oracle suite on the golden data carried in .device/cuda_oracle (transformers'
    # logits and greedy continuations; `oracle` mode also regenerates them here).
    LD_LIBRARY_PATH=$PWD/.device/sysroot/lib PHI_CUDA_ORACLE_DIR=$PWD/.device/cuda_oracle \
      timeout 60 $B/cuda_oracle_gpu_test
    echo "oracle (carried data) rc=$?"
  fi
} > "$OUT/tests.log" 2>&1
grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|rc=|PASSED|Failure|top_candidates_forward:|slice\(s\): compared|candidate step|ranks on one GPU|fp8 vs bf16|greedy decode:|fused decode:|^attention_prefill (\(|fp8 \()|decode partitions|rel norm|GPU==" "$OUT/tests.log" \
  | tee -a "$OUT/summary.txt"

# The benchmark table (issue 8's figures): ceilings, --breakdown, decode and throughput.
if have 60 "bench --breakdown"; then
  log "bench"
  if [ "$QUICK" = quick ]; then BARGS="--batches 1,32 --gen 64"; else BARGS=""; fi
  timeout $(cap 150) $B/phi_cuda_bench --breakdown $BARGS > "$OUT/bench.log" 2>&1
  echo "bench rc=$?" >> "$OUT/bench.log"
  cat "$OUT/bench.log" | tee -a "$OUT/summary.txt"
fi
# The engine's path (Step: top-1 candidate records leave the GPU).
if have 40 "bench --candidates"; then
  log "bench, engine path (--candidates)"
  timeout $(cap 90) $B/phi_cuda_bench --candidates --batches 1,32,256 $( [ "$QUICK" = quick ] && echo --gen 64 ) \
    > "$OUT/bench_candidates.log" 2>&1
  echo "bench --candidates rc=$?" >> "$OUT/bench_candidates.log"
  grep -E "^\||TTFT|rc=|tokens from" "$OUT/bench_candidates.log" | tee -a "$OUT/summary.txt"
fi

# LoRA: the shrink/expand kernels and model steps with rank-16 adapters against the base.
if have 40 "LoRA bench"; then
  log "LoRA bench"
  timeout $(cap 90) $B/phi_cuda_lora_bench --gen 32 > "$OUT/lora_bench.log" 2>&1
  echo "lora bench rc=$?" >> "$OUT/lora_bench.log"
  cat "$OUT/lora_bench.log" | tee -a "$OUT/summary.txt"
fi

# A real-shape checkpoint with random weights (safetensors): what the transformers baseline
# and the end-to-end bench load, so both run on the same weights.
if [ $RUNNER_OK = 1 ] && have 60 "make_model (Phi-1.5 shape)"; then
  TOK=""
  [ -d .device/phi15_tokenizer ] && TOK="--tokenizer-from .device/phi15_tokenizer"
  timeout $(cap 150) python3 tools/make_model.py --out /tmp/phi15_random --preset phi-1_5 --dtype bf16 \
    $TOK > "$OUT/make_model.log" 2>&1
  echo "make_model rc=$?" | tee -a "$OUT/summary.txt"
fi

# Hugging Face transformers on the same weights as cuda_engine_bench: the checkpoint made above
# (make_model prints its "wrote ... parameters" line only once model.safetensors is complete),
# else random init with the same shape; the log's first summary line says which. Eager here,
# static cache + torch.compile (generate's CompileConfig, reduce-overhead, fullgraph) last.
# SKIP_HF=1 skips both, SKIP_HF_COMPILE=1 only the compiled one.
HF_ARGS=""
grep -q "^wrote /tmp/phi15_random: .* parameters" "$OUT/make_model.log" 2>/dev/null &&
  HF_ARGS="--model-dir /tmp/phi15_random"
if [ -z "${SKIP_HF:-}" ] && have 45 "transformers baseline, eager"; then
  log "transformers baseline, eager (${HF_ARGS:-random init})"
  # Import + 2.8 GB load + one warm-up round and the timed calls (2 x 257 tokens at ~20 ms).
  PYTHONUNBUFFERED=1 timeout $(cap 90) python3 bench/cuda/hf_baseline.py $HF_ARGS > "$OUT/hf.log" 2>&1
  echo "hf rc=$?" >> "$OUT/hf.log"
  tail -4 "$OUT/hf.log" | tee -a "$OUT/summary.txt"
fi

# End to end in process: the engine over CudaModelRunner on that checkpoint (what phi-worker
# does per step, without gRPC), BF16 and FP8 KV.
if [ $RUNNER_OK = 1 ] && [ -x $B/cuda_engine_bench ] && [ -z "$HF_ARGS" ]; then
  log "end to end skipped: no real-shape checkpoint (make_model.log)"
elif [ $RUNNER_OK = 1 ] && [ -x $B/cuda_engine_bench ] && have 45 "end to end: engine + CudaModelRunner"; then
  log "end to end: engine + CudaModelRunner, Phi-1.5 shape"
  timeout $(cap 120) $B/cuda_engine_bench --model /tmp/phi15_random --streams 1,32,256 \
    > "$OUT/engine_bench.log" 2>&1
  echo "engine bench rc=$?" >> "$OUT/engine_bench.log"
  if have 25 "end to end, fp8 KV"; then
    timeout $(cap 60) $B/cuda_engine_bench --model /tmp/phi15_random --streams 256 --kv-dtype fp8 \
      >> "$OUT/engine_bench.log" 2>&1
    echo "engine bench fp8 rc=$?" >> "$OUT/engine_bench.log"
  fi
  grep -E "^\||rc=|^engine" "$OUT/engine_bench.log" | tee -a "$OUT/summary.txt"
fi

# Batch-1 decode on the engine's path three ways: fused with programmatic dependent launch
# (the default), fused without it, unfused (the LayerNorm and gelu kernels of their own); its
# top-1 candidate record from one block per row instead of 25 vocabulary slices; and TTFT
# with prefill attention on the FP32-FMA kernel instead of tensor cores.
log "batch-1 decode and TTFT: default / --no-pdl / --no-fusion --no-pdl / --candidate-slices 1 / --no-tc-prefill"
for flags in "" "--no-pdl" "--no-fusion --no-pdl" "--candidate-slices 1" "--no-tc-prefill"; do
  have 20 "batch-1 decode '$flags'" || break
  timeout $(cap 60) $B/phi_cuda_bench --candidates --batches 1 --gen 128 $flags > "$OUT/bench_b1.log" 2>&1
  echo "flags '$flags' rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "^\| 1 \||batch-1 decode|graph alone|programmatic launch|^TTFT" "$OUT/bench_b1.log" \
    | tee -a "$OUT/summary.txt"
done

# The same with the KV cache in FP8 E4M3 (issue 8's 256-sequence target; limit on FP8 bytes).
if have 40 "bench --kv-dtype fp8"; then
  log "bench, engine path, fp8 KV (--candidates --kv-dtype fp8)"
  timeout $(cap 90) $B/phi_cuda_bench --candidates --kv-dtype fp8 --batches 1,32,256 $( [ "$QUICK" = quick ] && echo --gen 64 ) \
    > "$OUT/bench_fp8.log" 2>&1
  echo "bench --kv-dtype fp8 rc=$?" >> "$OUT/bench_fp8.log"
  grep -E "^\||TTFT|rc=|KV cache:" "$OUT/bench_fp8.log" | tee -a "$OUT/summary.txt"
fi

# Batch-8 decode (the tensor-core decode GEMV, gemv_mma.cu): fused (the default), unfused on
# cuBLASLt, unfused on the same GEMV.
log "batch-8 decode: default / --no-fusion / --no-fusion --gemv-max-m 8"
for flags in "" "--no-fusion" "--no-fusion --gemv-max-m 8"; do
  have 20 "batch-8 decode '$flags'" || break
  timeout $(cap 60) $B/phi_cuda_bench --candidates --batches 8 --gen 128 $flags > "$OUT/bench_b8.log" 2>&1
  echo "flags '$flags' rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "^\| 8 \||graph alone|programmatic launch" "$OUT/bench_b8.log" | tee -a "$OUT/summary.txt"
done

# compute-sanitizer over the kernel tests (the CPU emulator's AddressSanitizer covers the same
# kernels in CI; this is the hardware's word).
if have 30 "memcheck (kernel tests)"; then
  log "memcheck (kernel tests)"
  timeout $(cap 45) compute-sanitizer --tool memcheck $B/cuda_kernels_gpu_test \
    --gtest_filter='-PhiCudaModelGpu.*:PhiCudaModelFusedDecodeGpu.*:DecodeGemvGpu.MatchesCpuTwin*:DecodeGemvGpu.FusedPrologues*:GemvTilesGpu.FusedPrologues*' > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$?" >> "$OUT/memcheck.log"
  tail -4 "$OUT/memcheck.log" | tee -a "$OUT/summary.txt"
  if have 20 "memcheck (fp8 kernel tests)"; then
    timeout $(cap 30) compute-sanitizer --tool memcheck $B/cuda_kv_fp8_gpu_test \
      --gtest_filter='-PhiCudaModelFp8Gpu.*' > "$OUT/memcheck_fp8.log" 2>&1
    echo "memcheck fp8 rc=$?" >> "$OUT/memcheck_fp8.log"
    tail -4 "$OUT/memcheck_fp8.log" | tee -a "$OUT/summary.txt"
  fi
fi

if [ -z "${SKIP_HF:-}" ] && [ -z "${SKIP_HF_COMPILE:-}" ] && have 90 "transformers baseline, torch.compile"; then
  log "transformers baseline, static cache + torch.compile (${HF_ARGS:-random init})"
  # Up to 240 s: compiling the decode step (one graph, none in the timed runs) took 33 s for
  # 2 layers and 56 s for 24 layers (hidden 128) from a cold inductor cache on a 2-core CPU
  # (C++ kernels, whole warm-up round 37 / 81 s); here Triton kernels compile on 16 cores,
  # expected 40-90 s, plus ~20 s import and load and ~10 s of runs. The progress lines
  # (loaded, warm-up round N) show how far a run cut off by the timeout got. When the budget
  # skips it, a second device call runs it alone:
  #   python3 tools/make_model.py --out /tmp/phi15_random --preset phi-1_5 --dtype bf16 &&
  #   python3 bench/cuda/hf_baseline.py --model-dir /tmp/phi15_random --compile
  PYTHONUNBUFFERED=1 timeout $(cap 240) python3 bench/cuda/hf_baseline.py $HF_ARGS --compile \
    > "$OUT/hf_compile.log" 2>&1
  echo "hf compile rc=$?" >> "$OUT/hf_compile.log"
  tail -4 "$OUT/hf_compile.log" | tee -a "$OUT/summary.txt"
fi

log "done"
