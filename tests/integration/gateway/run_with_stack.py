#!/usr/bin/env python3
"""Runs a command against a real stack: starts tokenizer, worker and gateway on loopback, exports
PHI_GATEWAY_ADDR / PHI_WORKER_ADDR / PHI_GATEWAY_HTTP, runs the command, stops the stack.

  run_with_stack.py -- COMMAND [ARGS...]
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402


def main():
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    s = stack.Stack(workers=1)
    try:
        env = {**os.environ, "PHI_GATEWAY_ADDR": f"127.0.0.1:{s.port}",
               "PHI_WORKER_ADDR": f"127.0.0.1:{s.worker_ports[0]}",
               "PHI_GATEWAY_HTTP": f"127.0.0.1:{s.http_port}"}
        return subprocess.call(argv, env=env)
    finally:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
