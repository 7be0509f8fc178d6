"""phi-worker --kv-cache-dtype: a value other than bf16|fp8 is refused at start naming the flag
and the allowed values; fp8 with the CPU backend is refused naming the flag and --device cuda;
fp8 with --device cuda gets past validation (here, without a GPU, it fails on the missing GPU;
with one it comes up SERVING with an fp8 cache and logs kv_cache_dtype fp8).

usage: phi_worker_kv_dtype_test.py PHI_WORKER MODEL_DIR
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "integration", "lib"))
import phi_testlib  # noqa: E402


def run(binary: str, args: list[str]) -> tuple[int, str]:
    r = subprocess.run([binary, *args, "--port=0", "--metrics-port=0"], capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "GPU " in r.stdout


def main() -> int:
    binary, model = sys.argv[1], sys.argv[2]
    base = [f"--model={model}", "--kv-cache-blocks=64"]

    code, out = run(binary, base + ["--kv-cache-dtype=fp16"])
    assert code != 0, f"--kv-cache-dtype=fp16 accepted:\n{out}"
    assert "--kv-cache-dtype" in out and "bf16, fp8" in out, f"message names neither flag nor values:\n{out}"
    print(f"ok: --kv-cache-dtype=fp16 refused (exit {code})")

    code, out = run(binary, base + ["--device=cpu", "--kv-cache-dtype=fp8"])
    assert code != 0, f"--device=cpu --kv-cache-dtype=fp8 accepted:\n{out}"
    assert "--kv-cache-dtype fp8" in out and "--device cuda" in out, out
    print(f"ok: fp8 with the CPU backend refused (exit {code})")

    if not gpu_present():
        code, out = run(binary, base + ["--device=cuda", "--kv-cache-dtype=fp8"])
        assert code != 0 and "no CUDA GPU is visible" in out, f"exit {code}:\n{out}"
        assert "--kv-cache-dtype" not in out, f"fp8 refused for --device cuda:\n{out}"
        print("ok: --device=cuda --kv-cache-dtype=fp8 validated (no GPU here: fails on the GPU)")
        return 0
    phi_testlib.add_proto_path()
    w = phi_testlib.Service(binary, base + ["--device=cuda", "--kv-cache-dtype=fp8", "--log-level=info"],
                            name="worker-cuda-fp8")
    try:
        w.wait_healthy(timeout=180)
    finally:
        code = w.terminate()
    log = w.log()
    assert code == 0, f"exit {code} after SIGTERM:\n{log}"
    assert '"kv_cache_dtype":"fp8"' in log, log[-2000:]
    print("ok: GPU: SERVING with an fp8 KV cache, exit 0 on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
