#!/bin/bash
# Packs parallel_nccl_test (built with PHI_ENABLE_CUDA=ON) and the Debian libraries it links
# into one folder that runs on a GPU machine of another distribution: that machine brings
# the driver, CUDA and NCCL (here: the image's pip nvidia-nccl-cu13).
#   tests/unit/worker/parallel/device_nccl_bundle.sh BUILD_DIR OUT_DIR
#   then on the GPU machine: OUT_DIR/run.sh
set -euo pipefail
build=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
cp "$build/tests/unit/worker/parallel/parallel_nccl_test" "$out/"
# Everything but glibc, libstdc++/libgcc (newer on the target) and NCCL (the target's).
ldd "$out/parallel_nccl_test" | awk '/=>/{print $3}' |
  grep -v -E 'libc\.so|libm\.so|libstdc\+\+|libgcc_s|libnccl|ld-linux|libpthread|libdl\.so|librt\.so' |
  xargs -I{} cp -L {} "$out/"
cat > "$out/run.sh" <<'RUN'
#!/bin/bash
cd "$(dirname "$0")"
nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null || true)
export LD_LIBRARY_PATH=$PWD:${nccl_dir}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 120 ./parallel_nccl_test
RUN
chmod +x "$out/run.sh"
du -sh "$out"
