"""phi-worker --device cuda as a process: on a machine without a GPU it must fail at start,
non-zero, with a message that names the missing GPU (not a CUDA error code alone); with a GPU
it must come up SERVING, answer /metrics (civetweb's server; cuBLASLt linked at start-up
would break it, hence its dlopen) and exit 0 on SIGTERM.

usage: phi_worker_cuda_device_test.py PHI_WORKER MODEL_DIR
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "integration", "lib"))
import phi_testlib  # noqa: E402


def gpu_present() -> bool:
    """A GPU as the driver sees it: nvidia-smi lists one (no driver, no nvidia-smi: none)."""
    if shutil.which("nvidia-smi") is None:
        return False
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "GPU " in r.stdout


def main() -> int:
    binary, model = sys.argv[1], sys.argv[2]
    args = [f"--model={model}", "--device=cuda", "--kv-cache-blocks=64", "--log-level=info"]
    if not gpu_present():
        w = phi_testlib.Service(binary, args, name="worker-cuda-nogpu")
        try:
            code = w.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            raise AssertionError(f"--device cuda without a GPU still running after 60 s:\n{w.log()}")
        log = w.log()
        w.kill()
        assert code != 0, f"--device cuda without a GPU exited 0:\n{log}"
        assert "no CUDA GPU is visible" in log, f"message does not name the missing GPU:\n{log}"
        print(f"ok: no GPU: exit {code}, message names the missing GPU")
        # A rank of a tensor-parallel group fails the same way before it waits for the group
        # (no leader listens on port 9; the join timeout would be 120 s).
        t0 = time.time()
        w = phi_testlib.Service(binary, args + ["--world-size=2", "--rank=1", "--leader=127.0.0.1:9"],
                                name="worker-cuda-nogpu-tp")
        try:
            code = w.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            raise AssertionError(f"--device cuda --world-size 2 without a GPU still running after 60 s:\n{w.log()}")
        log = w.log()
        w.kill()
        assert code != 0 and "no CUDA GPU is visible" in log, f"exit {code}:\n{log}"
        assert time.time() - t0 < 30, f"took {time.time() - t0:.1f}s: it waited for the group first"
        print(f"ok: no GPU, rank 1 of 2: exit {code} in {time.time() - t0:.1f}s")
        return 0
    phi_testlib.add_proto_path()
    w = phi_testlib.Service(binary, args, name="worker-cuda")
    try:
        w.wait_healthy(timeout=180)
        body = w.scrape()
        assert "phi_worker_" in body, body[:400]
    finally:
        code = w.terminate()
    assert code == 0, f"exit {code} after SIGTERM:\n{w.log()}"
    print("ok: GPU: SERVING, /metrics answered, exit 0 on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
