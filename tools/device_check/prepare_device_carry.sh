#!/usr/bin/env bash
# Fills the ignored .device/ folder that tools/device_check/device_check.sh needs on the GPU machine
# (which has nvcc, CMake, ninja and python3+torch but no GoogleTest, Abseil or nlohmann/json):
# GoogleTest sources, Abseil and RE2 (the LoRA loader's) headers and shared libraries, nlohmann/json, and a tiny random
# checkpoint with head_dim 64 for the runner test, the oracle suite's golden data, and prebuilt
# sm_90 binaries of the tests and the benchmark (PHI_NO_PREBUILT=1: none). Run here, from the
# repository root; then
# call the device tool with carry=[".device"] and `bash tools/device_check/device_check.sh`.
set -euo pipefail
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf .device && mkdir -p .device/sysroot/include .device/sysroot/lib
cp -a /usr/src/googletest .device/googletest
cp -a /usr/include/absl /usr/include/nlohmann /usr/include/re2 .device/sysroot/include/
cp -a /usr/lib/x86_64-linux-gnu/libabsl_*.so* /usr/lib/x86_64-linux-gnu/libre2.so* .device/sysroot/lib/
PY=${PHI_PYTHON:-.venv/bin/python3}
"$PY" tools/make_model.py --out .device/cuda_tiny_model --preset tiny --num-heads 2 --dtype bf16 \
  --seed 11 --std 0.05 >/dev/null
"$PY" tests/unit/worker/cuda/make_cuda_oracle.py --out .device/cuda_oracle >/dev/null
# The Phi-1.5-sized tokenizer (3.5 MB) for device_check's end-to-end run, whose 2.8 GB of
# random weights are made on the device (make_model.py --tokenizer-from this).
"$PY" tools/make_tokenizer.py --out .device/phi15_tokenizer --vocab-size 50257 >/dev/null
# Prebuilt sm_90 binaries of the standalone build (device_check.sh uses them when they start
# there, which saves the build's device minutes) and the libcudart they link.
if [ -z "${PHI_NO_PREBUILT:-}" ]; then
  PB=${PHI_PREBUILT_DIR:-/tmp/phi_device_prebuilt}
  cmake -S bench/cuda/standalone -B "$PB" -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DPHI_GTEST_SRC=$PWD/.device/googletest -DPHI_SYSROOT=$PWD/.device/sysroot >/dev/null
  nice -n 5 cmake --build "$PB" -j"$(nproc)" >/dev/null
  mkdir -p .device/bin
  for f in "$PB"/cuda_*_test "$PB"/phi_cuda_bench "$PB"/phi_cuda_lora_bench "$PB"/cuda_engine_bench; do cp "$f" .device/bin/; done
  cp -L /usr/local/cuda/lib64/libcudart.so.13 .device/sysroot/lib/
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services bench tests || echo +changes), $(date -u +%FT%TZ)" \
    > .device/bin/BUILT
  # device_check.sh uses these binaries only when the sources still hash the same there.
  bash tools/device_check/source_hash.sh > .device/bin/SOURCES
fi
du -sh .device
