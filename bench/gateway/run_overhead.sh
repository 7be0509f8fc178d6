#!/usr/bin/env bash
# Starts tokenizer + one worker + gateway on loopback from a folder of built binaries and runs
# gateway_overhead_bench against them, once with the gateway decoding through the tokenizer
# service (DecodeStream, the default), once with --local-decode (in-process decoding) and once
# with --local-tokenizer (in-process encoding and decoding: no tokenizer RPC at all).
#
#   [MODES="remote local tokenizer"] [PIN=1] bench/gateway/run_overhead.sh BIN_DIR MODEL_DIR [bench flags...]
# BIN_DIR holds phi-tokenizer, phi-worker, phi-gateway, gateway_overhead_bench (or set GATEWAY_BIN
# to compare another phi-gateway build).
# PIN=1 gives the worker the upper half of the CPUs (and as many forward-pass threads) and the
# gateway, tokenizer and benchmark client the lower half, as separate pods would have: on a
# small machine the gateway's CPU is otherwise taken from the worker and the table measures
# that contention rather than what the gateway adds.
set -euo pipefail
bin=$1; model=$2; shift 2
log=$(mktemp -d)
pids=()
# user+sys CPU seconds a process has used so far (/proc/PID/stat fields 14 and 15, in clock ticks).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop EXIT
front=(); back=(); threads=()
if [[ ${PIN:-0} == 1 ]]; then
  n=$(nproc); half=$(( n / 2 > 0 ? n / 2 : 1 ))
  front=(taskset -c "0-$(( half - 1 ))"); back=(taskset -c "$half-$(( n - 1 ))"); threads=(--threads $(( n - half )))
fi
gateway_bin=${GATEWAY_BIN:-$bin/phi-gateway}
for mode in ${MODES:-remote local tokenizer}; do
  extra=()
  [[ $mode == local ]] && extra=(--local-decode "$model")
  [[ $mode == tokenizer ]] && extra=(--local-tokenizer "$model")
  "${front[@]}" "$bin/phi-tokenizer" --model "$model" --port 52052 --metrics-port 0 >"$log/tok.log" 2>&1 & pids+=($!)
  "${back[@]}" "$bin/phi-worker" --model "$model" --port 52053 --metrics-port 0 "${threads[@]}" \
      >"$log/worker.log" 2>&1 & pids+=($!)
  "${front[@]}" "$gateway_bin" --port 52051 --http-port 0 --metrics-port 0 --tokenizer 127.0.0.1:52052 \
      --workers 127.0.0.1:52053 --health-interval-seconds 0.2 "${extra[@]}" >"$log/gw.log" 2>&1 & pids+=($!)
  echo "## tokenizer path: $mode ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg), pinned: ${PIN:-0})"
  "${front[@]}" "$bin/gateway_overhead_bench" --gateway 127.0.0.1:52051 --worker 127.0.0.1:52053 --tokenizer 127.0.0.1:52052 \
      --wait-seconds 60 "$@"
  # CPU each process used for the whole run (both paths, warm-ups included): on a small machine
  # the gateway's CPU is taken from the worker, so this is the cost to compare across modes.
  echo "CPU seconds (user+sys): tokenizer $(cpu_s "${pids[0]}"), worker $(cpu_s "${pids[1]}"), gateway $(cpu_s "${pids[2]}")"
  stop
done
