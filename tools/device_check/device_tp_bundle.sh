#!/bin/bash
# Packs what checks the CUDA worker beyond the kernel library on a GPU machine that has no
# gRPC, Abseil or Gloo (the device machine): cuda_tp_gpu_test (tensor parallelism over NCCL
# with the CUDA backend: a group of one, and two processes when two GPUs are visible) and
# phi-worker (--device cuda as a real service: SERVING, /metrics, exit 0 on SIGTERM), built
# here with -DPHI_ENABLE_CUDA=ON, plus the Debian libraries they link and the tiny head_dim-64
# model of the cuda_tiny_model fixture. The GPU machine brings the driver, CUDA and NCCL.
#   tools/device_check/device_tp_bundle.sh BUILD_DIR OUT_DIR      (here; OUT_DIR under the repo, ignored)
#   OUT_DIR/run.sh                                         (on the GPU machine; logs to stdout)
set -euo pipefail
build=$1
out=$2
rm -rf "$out"
mkdir -p "$out/lib"
cp "$build/tests/unit/worker/cuda/cuda_tp_gpu_test" "$build/services/worker/service/phi-worker" "$out/"
model="$build/tests/unit/worker/cuda/cuda_tiny_model"
[ -f "$model/config.json" ] || { echo "no $model: run ctest -R cuda_tiny_model in $build first" >&2; exit 1; }
cp -r "$model" "$out/model"
# Everything but glibc, libstdc++/libgcc (newer on the target) and CUDA/NCCL (the target's).
for bin in "$out/cuda_tp_gpu_test" "$out/phi-worker"; do
  ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' |
  grep -v -E '/(libcuda|libcudart|libcublas|libcublasLt|libnccl)\.so' |
  xargs -I{} cp -L {} "$out/lib/"
cat > "$out/run.sh" <<'RUN'
#!/bin/bash
# On the GPU machine: the TP-over-NCCL test, then phi-worker --device cuda as a service.
cd "$(dirname "$0")"
nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null || true)
cublas_dir=$(python3 -c "import nvidia.cublas as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null || true)
export LD_LIBRARY_PATH=$PWD/lib:${nccl_dir}:${cublas_dir}:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "--- cuda_tp_gpu_test"
PHI_TEST_MODEL_DIR=$PWD/model timeout 240 ./cuda_tp_gpu_test
echo "cuda_tp_gpu_test rc=$?"
echo "--- phi-worker --device cuda"
./phi-worker --model="$PWD/model" --device=cuda --host=127.0.0.1 --port=0 --metrics-port=0 \
  --kv-cache-blocks=64 > worker.log 2>&1 &
pid=$!
ready=0
for _ in $(seq 1 600); do
  grep -q '"event":"ready"' worker.log && { ready=1; break; }
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
port=$(grep -o '"metrics_port":[0-9]*' worker.log | head -1 | cut -d: -f2)
metrics=0
if [ $ready = 1 ] && [ -n "$port" ] && exec 3<>/dev/tcp/127.0.0.1/"$port"; then
  printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
  head -n1 <&3 | grep -q ' 200 ' && metrics=1
  exec 3<&-
fi
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
grep -E '"event":"(ready|model_load_failed|warmup_failed)"' worker.log | cut -c1-400
echo "phi-worker ready=$ready metrics_200=$metrics exit=$rc (want 1 1 0)"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
