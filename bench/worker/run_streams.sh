#!/usr/bin/env bash
# What Generate streams cost the worker process: starts phi-tokenizer, phi-worker and phi-gateway
# on loopback (gateway_overhead_bench takes the prompt's ids from the tokenizer and waits for the
# gateway), runs gateway_overhead_bench --paths worker (clients straight to the worker), and adds
# the worker's thread count at its peak (/proc/PID/status Threads, sampled every 50 ms) and its
# CPU per generated token (/proc/PID/stat utime+stime over the benchmark, start-up excluded).
#
#   [STREAMS=64 REQUESTS=8 TOKENS=64 ROUNDS=5] bench/worker/run_streams.sh BIN_DIR WORKER_BIN MODEL_DIR
# BIN_DIR holds phi-tokenizer, phi-gateway, gateway_overhead_bench; WORKER_BIN is the phi-worker
# to measure (compare builds with the same BIN_DIR). Pinned as bench/gateway/run_overhead.sh
# PIN=1: the worker on the upper half of the CPUs (and as many forward-pass threads), the rest on
# the lower half, so the clients' CPU is not taken from the worker.
set -euo pipefail
bin=$1; worker_bin=$2; model=$3
streams=${STREAMS:-64}; requests=${REQUESTS:-8}; tokens=${TOKENS:-64}; rounds=${ROUNDS:-5}; warmup=2
log=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
n=$(nproc); half=$(( n / 2 > 0 ? n / 2 : 1 ))
front=(taskset -c "0-$(( half - 1 ))"); back=(taskset -c "$half-$(( n - 1 ))")
"${front[@]}" "$bin/phi-tokenizer" --model "$model" --port 52062 --metrics-port 0 >"$log/tok.log" 2>&1 & pids+=($!)
"${back[@]}" "$worker_bin" --model "$model" --port 52063 --metrics-port 0 --threads $(( n - half )) \
    >"$log/worker.log" 2>&1 & pids+=($!)
worker=${pids[1]}
"${front[@]}" "$bin/phi-gateway" --port 52061 --http-port 0 --metrics-port 0 --tokenizer 127.0.0.1:52062 \
    --workers 127.0.0.1:52063 --health-interval-seconds 0.2 >"$log/gw.log" 2>&1 & pids+=($!)
sleep 2
echo "## $(basename "$worker_bin") $worker_bin: $streams streams ($n CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
echo "worker threads idle: $(awk '/^Threads:/ {print $2}' "/proc/$worker/status")"
( peak=0; while kill -0 "$worker" 2>/dev/null; do
    t=$(awk '/^Threads:/ {print $2}' "/proc/$worker/status" 2>/dev/null || echo 0)
    (( t > peak )) && peak=$t && echo "$peak" >"$log/peak"
    sleep 0.05
  done ) & sampler=$!
t0=$(ticks "$worker")
"${front[@]}" "$bin/gateway_overhead_bench" --gateway 127.0.0.1:52061 --worker 127.0.0.1:52063 \
    --tokenizer 127.0.0.1:52062 --wait-seconds 60 --paths worker --streams "$streams" --requests "$requests" \
    --tokens "$tokens" --rounds "$rounds" --warmup "$warmup"
t1=$(ticks "$worker")
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
# Tokens the worker made meanwhile: the measured rounds, both paths' warm-ups, the gateway probe (2).
generated=$(( rounds * streams * requests * tokens + 2 * warmup * tokens + 2 ))
awk -v d=$(( t1 - t0 )) -v hz="$(getconf CLK_TCK)" -v n="$generated" -v peak="$(cat "$log/peak" 2>/dev/null || echo 0)" \
    'BEGIN { printf "worker threads peak: %d; worker CPU: %.2f s for %d tokens = %.1f us/token\n", peak, d / hz, n, 1e6 * d / hz / n }'
stop
