#!/usr/bin/env python3
"""The `phi` command line: talk to a phi-serve gateway over gRPC, or start a whole stack.

  phi_cli.py chat     [--gateway HOST:PORT] [--system TEXT] [-m TEXT]   interactive (or one-shot) chat
  phi_cli.py generate [--gateway HOST:PORT] PROMPT                      raw completion, streamed
  phi_cli.py models   [--gateway HOST:PORT]                             models served
  phi_cli.py up       [--model DIR|MODEL_ID] [--workers N] ...          tokenizer + worker(s) + gateway
  phi_cli.py merge-lora --base DIR --adapter DIR --out DIR              a LoRA adapter merged into its base

Uses the Python stubs generated from proto/phi/v1 (CMake target phi_proto_python) and Debian's
python3-grpcio. The stubs are found through $PHI_PROTO_PYTHON_DIR, else <build dir>/proto/python.
"""
import argparse
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dir_candidates(explicit=None):
    c = []
    if explicit:
        c.append(explicit)
    if os.environ.get("PHI_BUILD_DIR"):
        c.append(os.environ["PHI_BUILD_DIR"])
    c.append(os.path.join(REPO, "build", "release"))
    c += sorted(glob.glob(os.path.join(REPO, "build", "*")), key=lambda p: -os.path.getmtime(p))
    return c


def import_stubs(build_dir=None):
    dirs = []
    if os.environ.get("PHI_PROTO_PYTHON_DIR"):
        dirs.append(os.environ["PHI_PROTO_PYTHON_DIR"])
    dirs += [os.path.join(b, "proto", "python") for b in build_dir_candidates(build_dir)]
    for d in dirs:
        if os.path.exists(os.path.join(d, "phi", "v1", "gateway_pb2_grpc.py")):
            sys.path.insert(0, d)
            break
    else:
        sys.exit("phi: generated Python stubs not found; build the phi_proto_python target "
                 "or set PHI_PROTO_PYTHON_DIR")
    global grpc, common_pb2, gateway_pb2, gateway_pb2_grpc, worker_pb2, worker_pb2_grpc
    global tokenizer_pb2, tokenizer_pb2_grpc
    import grpc  # noqa: E402  (Debian python3-grpcio)
    from phi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, worker_pb2, worker_pb2_grpc  # noqa: E402
    from phi.v1 import tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402


def channel(address):
    # Quick reconnects: services come up while we probe them.
    return grpc.insecure_channel(address, options=[("grpc.initial_reconnect_backoff_ms", 100),
                                                   ("grpc.min_reconnect_backoff_ms", 100),
                                                   ("grpc.max_reconnect_backoff_ms", 500)])


def metadata(args):
    key = getattr(args, "api_key", None) or os.environ.get("PHI_API_KEY")
    return [("authorization", "Bearer " + key)] if key else []


def chat_stub(args):
    return gateway_pb2_grpc.ChatServiceStub(channel(args.gateway))


def sampling_from(args):
    s = common_pb2.SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    if args.seed is not None:
        s.seed = args.seed
    return s


def stream_chat(stub, args, messages, out=sys.stdout):
    """Streams one assistant turn to `out`; returns (text, last message)."""
    req = gateway_pb2.ChatRequest(model=args.model or "", messages=messages, sampling=sampling_from(args),
                                  stopping=common_pb2.StoppingCriteria(max_new_tokens=args.max_tokens,
                                                                       stop=args.stop or []))
    text, last = [], None
    for m in stub.ChatStream(req, metadata=metadata(args), timeout=args.timeout):
        if m.text_delta:
            out.write(m.text_delta)
            out.flush()
            text.append(m.text_delta)
        last = m
    return "".join(text), last


def report_error(e):
    print(f"\nphi: {e.code().name}: {e.details()}", file=sys.stderr)


def cmd_chat(args):
    import_stubs(args.build_dir)
    stub = chat_stub(args)
    msgs = []
    if args.system:
        msgs.append(gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_SYSTEM, content=args.system))
    one_shot = args.message is not None or not sys.stdin.isatty()
    if one_shot:
        content = args.message if args.message is not None else sys.stdin.read()
        msgs.append(gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content=content))
        try:
            _, last = stream_chat(stub, args, msgs)
        except grpc.RpcError as e:
            report_error(e)
            return 1
        print()
        if args.verbose and last is not None:
            print(f"[{common_pb2.FinishReason.Name(last.finish_reason)}, {last.usage.prompt_tokens} prompt + "
                  f"{last.usage.completion_tokens} completion tokens, ttft "
                  f"{last.timings.time_to_first_token_seconds * 1000:.1f} ms]", file=sys.stderr)
        return 0
    print("phi chat: type a message and press Enter; /reset clears the conversation, /quit or Ctrl-D ends.")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/reset":
            msgs = msgs[:1] if args.system else []
            continue
        msgs.append(gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content=line))
        sys.stdout.write("assistant> ")
        try:
            text, _ = stream_chat(stub, args, msgs)
        except KeyboardInterrupt:  # cancels the stream (and the worker's generation)
            print("\n[interrupted]")
            msgs.pop()
            continue
        except grpc.RpcError as e:
            report_error(e)
            msgs.pop()
            continue
        print()
        msgs.append(gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_ASSISTANT, content=text))


def cmd_generate(args):
    import_stubs(args.build_dir)
    stub = chat_stub(args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    req = gateway_pb2.CompleteRequest(model=args.model or "", prompt=prompt, sampling=sampling_from(args),
                                      stopping=common_pb2.StoppingCriteria(max_new_tokens=args.max_tokens,
                                                                           stop=args.stop or []),
                                      echo=args.echo)
    try:
        for m in stub.CompleteStream(req, metadata=metadata(args), timeout=args.timeout):
            sys.stdout.write(m.text_delta)
            sys.stdout.flush()
    except grpc.RpcError as e:
        report_error(e)
        return 1
    print()
    return 0


def cmd_models(args):
    import_stubs(args.build_dir)
    try:
        resp = chat_stub(args).ListModels(gateway_pb2.ListModelsRequest(), metadata=metadata(args),
                                          timeout=args.timeout)
    except grpc.RpcError as e:
        report_error(e)
        return 1
    print(f"{'MODEL':<32} {'CONTEXT':>8} {'READY GROUPS':>13}")
    for m in resp.models:
        print(f"{m.name:<32} {m.max_context_tokens:>8} {m.ready_worker_groups:>13}")
    return 0


# ---------------------------------------------------------------------------------------------
# phi up: a launcher in the spirit of TGI's: children, health, endpoints, signals.

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name, build_dir):
    for b in build_dir_candidates(build_dir):
        for sub in ("services/tokenizer/service", "services/worker/service", "services/gateway", "tools/merge_lora", ""):
            p = os.path.join(b, sub, name)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    sys.exit(f"phi up: {name} not found in the build folders ({', '.join(build_dir_candidates(build_dir)[:3])}...); "
             f"build it first (./phi build)")


class Child:
    def __init__(self, name, argv, log_dir):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(log_dir, name + ".log")
        self.log = open(self.log_path, "wb")
        # Own process group: Ctrl-C in the terminal reaches only the launcher, which then
        # drains the children in order.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


class Launcher:
    def __init__(self, args):
        self.args = args
        self.children = []
        self.log_dir = args.log_dir or tempfile.mkdtemp(prefix="phi-up-")
        os.makedirs(self.log_dir, exist_ok=True)
        self.stopping = False

    def start(self, name, argv):
        c = Child(name, argv, self.log_dir)
        self.children.append(c)
        return c

    def check_children(self):
        """A child that died is reported, never restarted: the whole stack stops."""
        for c in self.children:
            rc = c.proc.poll()
            if rc is not None:
                print(f"\nphi up: {c.name} exited with code {rc} (not restarted). Last lines of {c.log_path}:\n"
                      f"{c.tail()}", file=sys.stderr)
                return c
        return None

    def stop_all(self, grace=15.0):
        self.stopping = True
        # Front to back: the gateway drains first, then workers, then the tokenizer.
        for c in reversed(self.children):
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace
        for c in reversed(self.children):
            left = max(0.1, deadline - time.time())
            try:
                c.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                print(f"phi up: {c.name} did not stop within {grace:.0f} s; killing it", file=sys.stderr)
                c.proc.kill()
                c.proc.wait()

    def wait_until(self, what, probe, timeout):
        t0 = time.time()
        last_err = None
        while time.time() - t0 < timeout:
            dead = self.check_children()
            if dead:
                raise SystemExit(1)
            try:
                if probe():
                    return
            except grpc.RpcError as e:
                last_err = f"{e.code().name}: {e.details()}"
            time.sleep(0.2)
        raise SystemExit(f"phi up: {what} not healthy after {timeout:.0f} s ({last_err}); logs in {self.log_dir}")


# The demo model: the tiny shape with Phi-1.5 Instruct's real tokenizer and its padded vocabulary
# (51,200 output rows for 50,297 ids), so that what the stack encodes and decodes is what the real
# model's would be. A folder made with other arguments (an older demo) is made again.
DEMO_MODEL_ARGS = ["--preset", "tiny", "--tokenizer", "gpt2", "--vocab-size", "51200", "--dtype", "f32"]


def ensure_demo_model(args):
    out = args.demo_dir or os.path.join(os.path.expanduser("~"), ".cache", "phi-serve", "demo-model")
    if args.revision:
        sys.exit("phi up: --revision needs --model MODEL_ID")
    stamp = os.path.join(out, ".phi-demo-args")
    want = " ".join(DEMO_MODEL_ARGS)
    try:
        with open(stamp, encoding="utf-8") as f:
            have = f.read()
    except OSError:
        have = None
    if have != want or not os.path.exists(os.path.join(out, "config.json")):
        print(f"phi up: no --model given; making the demo model in {out} (tools/make_model.py {want})")
        py = os.path.join(REPO, ".venv", "bin", "python3")
        py = py if os.path.exists(py) else sys.executable
        subprocess.run([py, os.path.join(REPO, "tools", "make_model.py"), "--out", out, *DEMO_MODEL_ARGS],
                       check=True)
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(want)
    return out, None


def resolve_model(spec, revision=None):
    """A model folder as given; otherwise a Hub model id, pulled into the HF cache (tools/hub).
    Returns (folder, name the workers report)."""
    if os.path.isdir(spec):
        if revision:
            sys.exit("phi up: --revision applies to a Hub model id, not to a folder")
        return spec, None
    sys.path.insert(0, os.path.join(REPO, "tools", "hub"))
    import hub_pull
    if not hub_pull.looks_like_repo_id(spec):
        sys.exit(f"phi up: --model {spec}: no such folder, and not a Hub model id (owner/name)")
    print(f"phi up: {spec} is not a folder here; getting it from the Hugging Face Hub (./phi pull)")
    try:
        return hub_pull.pull(spec, revision), spec
    except hub_pull.PullError as e:
        sys.exit(f"phi up: --model {spec} is not a folder; from the Hub: {e}")


def cmd_up(args):
    import_stubs(args.build_dir)
    demo = args.model is None
    model, model_name = ensure_demo_model(args) if demo else resolve_model(args.model, args.revision)
    if demo:
        print("phi up: the demo model has RANDOM weights: it serves fine, but its text is gibberish.")
    eph = args.ephemeral_ports
    gw_port = free_port() if eph else args.port
    http_port = free_port() if eph else args.http_port
    metrics_port = free_port() if eph else args.metrics_port
    tok_port = free_port() if eph else args.tokenizer_port
    worker_ports = [free_port() if eph else args.worker_port + i for i in range(args.workers)]
    L = Launcher(args)

    def on_signal(signum, _frame):
        if not L.stopping:
            print(f"\nphi up: got {signal.Signals(signum).name}; stopping the stack", file=sys.stderr)
            L.stop_all()
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        L.start("tokenizer", [find_binary("phi-tokenizer", args.build_dir), "--model", model,
                              "--port", str(tok_port), "--metrics-port", str(free_port() if eph else 9091)])
        for i, p in enumerate(worker_ports):
            L.start(f"worker-{i}", [find_binary("phi-worker", args.build_dir), "--model", model, "--port", str(p),
                                    "--metrics-port", str(free_port() if eph else 9092 + i)]
                    + (["--threads", str(args.worker_threads)] if args.worker_threads else [])
                    + (["--model-name", model_name] if model_name else []))
        gw = [find_binary("phi-gateway", args.build_dir), "--port", str(gw_port), "--http-port", str(http_port),
              "--metrics-port", str(metrics_port), "--tokenizer", f"127.0.0.1:{tok_port}",
              "--workers", ",".join(f"127.0.0.1:{p}" for p in worker_ports)]
        L.start("gateway", gw + (args.gateway_arg or []))

        # Fresh channels per probe: a channel that found a port closed backs off for seconds.
        L.wait_until("tokenizer", lambda: tokenizer_pb2_grpc.TokenizerServiceStub(channel(f"127.0.0.1:{tok_port}"))
                     .Info(tokenizer_pb2.InfoRequest(), timeout=1) is not None, args.startup_timeout)
        for i, p in enumerate(worker_ports):
            L.wait_until(f"worker-{i}", lambda: worker_pb2_grpc.WorkerServiceStub(channel(f"127.0.0.1:{p}"))
                         .GetStatus(worker_pb2.GetStatusRequest(), timeout=1).ready, args.startup_timeout)

        def gateway_ready():
            r = gateway_pb2_grpc.ChatServiceStub(channel(f"127.0.0.1:{gw_port}")).ListModels(gateway_pb2.ListModelsRequest(), timeout=1, metadata=metadata(args))
            return any(m.ready_worker_groups >= len(worker_ports) for m in r.models)
        L.wait_until("gateway", gateway_ready, args.startup_timeout)
        chat = gateway_pb2_grpc.ChatServiceStub(channel(f"127.0.0.1:{gw_port}"))

        print("\nphi-serve is up:")
        print(f"  gRPC  phi.v1.ChatService   127.0.0.1:{gw_port}")
        print(f"  HTTP  OpenAI-compatible    http://127.0.0.1:{http_port}/v1  (chat/completions, completions, models)")
        if "--no-web-ui" not in (args.gateway_arg or []):
            print(f"  chat page                  http://127.0.0.1:{http_port}/  (open it in a browser)")
        print(f"  metrics                    http://127.0.0.1:{metrics_port}/metrics")
        print(f"  tokenizer 127.0.0.1:{tok_port}, workers {', '.join(f'127.0.0.1:{p}' for p in worker_ports)}")
        print(f"  model {model}{'  (demo: random weights, gibberish text)' if demo else ''}")
        print(f"  logs  {L.log_dir}")
        print(f"  try:  ./phi chat --gateway 127.0.0.1:{gw_port}")

        if not args.no_demo_chat:
            question = "Hello! What can you do?"
            print(f"\nDemo chat\n  user> {question}\n  assistant> ", end="", flush=True)
            try:
                ns = argparse.Namespace(model="", temperature=0.0, top_p=0.0, top_k=0, seed=None,
                                        max_tokens=args.demo_tokens, stop=[], timeout=60, api_key=args.api_key)
                _, last = stream_chat(chat, ns, [gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER,
                                                                        content=question)])
                print(f"\n  [{last.usage.completion_tokens} tokens, first after "
                      f"{last.timings.time_to_first_token_seconds * 1000:.1f} ms"
                      f"{'; random weights, so gibberish' if demo else ''}]")
            except grpc.RpcError as e:
                report_error(e)
                L.stop_all()
                return 1
        if args.exit_after_demo:
            L.stop_all()
            return 0
        print("\nphi up: serving; Ctrl-C or SIGTERM stops every service.")
        while True:
            if L.check_children():
                L.stop_all()
                return 1
            time.sleep(0.5)
    except SystemExit:
        L.stop_all()
        raise


def cmd_merge_lora(args):
    """phi-merge-lora (tools/merge_lora): W' = W + scaling * B A written as a new model folder."""
    argv = [find_binary("phi-merge-lora", args.build_dir), "--base", args.base, "--adapter", args.adapter,
            "--out", args.out, "--max-lora-rank", str(args.max_lora_rank)]
    return subprocess.call(argv)


def main(argv=None):
    p = argparse.ArgumentParser(prog="phi", description="phi-serve command line")
    sub = p.add_subparsers(dest="cmd", required=True)

    def client_flags(sp):
        sp.add_argument("--gateway", default=os.environ.get("PHI_GATEWAY", "127.0.0.1:50051"),
                        help="gateway gRPC address (env PHI_GATEWAY; default 127.0.0.1:50051)")
        sp.add_argument("--api-key", help="API key (env PHI_API_KEY)")
        sp.add_argument("--model", help="model name (default: the gateway's)")
        sp.add_argument("--max-tokens", type=int, default=256)
        sp.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
        sp.add_argument("--top-p", type=float, default=0.0)
        sp.add_argument("--top-k", type=int, default=0)
        sp.add_argument("--seed", type=int)
        sp.add_argument("--stop", action="append", help="stop string (repeatable)")
        sp.add_argument("--timeout", type=float, default=600, help="per-request deadline, seconds")
        sp.add_argument("--build-dir", help="build folder holding proto/python (env PHI_BUILD_DIR)")

    c = sub.add_parser("chat", help="multi-turn chat with streamed replies")
    client_flags(c)
    c.add_argument("--system", help="system prompt")
    c.add_argument("-m", "--message", help="one-shot: send this message, print the reply, exit")
    c.add_argument("-v", "--verbose", action="store_true", help="print finish reason, tokens and TTFT")
    c.set_defaults(fn=cmd_chat)

    g = sub.add_parser("generate", help="raw completion of a prompt (no chat template)")
    client_flags(g)
    g.add_argument("prompt", nargs="?", help="prompt text (default: stdin)")
    g.add_argument("--echo", action="store_true", help="print the prompt before the completion")
    g.set_defaults(fn=cmd_generate)

    m = sub.add_parser("models", help="models served by the gateway")
    client_flags(m)
    m.set_defaults(fn=cmd_models)

    u = sub.add_parser("up", help="start tokenizer, worker(s) and gateway on this machine")
    u.add_argument("--model", help="model folder, or a Hugging Face Hub model id downloaded into the HF cache "
                                   "(default: make and serve the random-weight demo model)")
    u.add_argument("--revision", help="with a Hub model id: branch, tag or commit (default main)")
    u.add_argument("--demo-dir", help="where the demo model goes (default ~/.cache/phi-serve/demo-model)")
    u.add_argument("--workers", type=int, default=1, help="worker processes (CPU: one group each)")
    u.add_argument("--worker-threads", type=int, default=0, help="--threads for each worker (0: its default)")
    u.add_argument("--port", type=int, default=50051, help="gateway gRPC port")
    u.add_argument("--http-port", type=int, default=8080, help="gateway OpenAI-compatible HTTP port")
    u.add_argument("--metrics-port", type=int, default=9090, help="gateway /metrics port")
    u.add_argument("--tokenizer-port", type=int, default=50052)
    u.add_argument("--worker-port", type=int, default=50053, help="first worker port (+1 per worker)")
    u.add_argument("--ephemeral-ports", action="store_true", help="pick free ports for everything (tests)")
    u.add_argument("--gateway-arg", action="append", help="extra flag for phi-gateway (repeatable)")
    u.add_argument("--api-key", help="API key for the health probe and demo chat (when the gateway needs one)")
    u.add_argument("--log-dir", help="children's logs (default: a new folder under /tmp)")
    u.add_argument("--startup-timeout", type=float, default=300)
    u.add_argument("--no-demo-chat", action="store_true")
    u.add_argument("--demo-tokens", type=int, default=48)
    u.add_argument("--exit-after-demo", action="store_true", help="stop the stack after the demo chat (CI)")
    u.add_argument("--build-dir", help="build folder with the binaries (env PHI_BUILD_DIR)")
    u.set_defaults(fn=cmd_up)

    ml = sub.add_parser("merge-lora", help="write a model folder with a PEFT LoRA adapter merged into its weights")
    ml.add_argument("--base", required=True, help="the base Phi model folder")
    ml.add_argument("--adapter", required=True, help="the PEFT adapter folder (adapter_config.json + "
                                                     "adapter_model.safetensors)")
    ml.add_argument("--out", required=True, help="the merged model folder to write (must not exist, or be empty)")
    ml.add_argument("--max-lora-rank", type=int, default=64, help="largest adapter rank accepted (default 64)")
    ml.add_argument("--build-dir", help="build folder with phi-merge-lora (env PHI_BUILD_DIR)")
    ml.set_defaults(fn=cmd_merge_lora)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
