#!/usr/bin/env python3
"""The gateway's public HTTP API under abuse and at scale, black-box: the real
phi-tokenizer, phi-worker and phi-gateway on loopback (stack.py), raw sockets only.

What each test asserts is in its docstring. Tests that could crash or balloon a gateway get a
gateway of their own, so one failure does not take the others with it.

PHI_HTTP_TEST_OLD_FLAGS=1 leaves out the flags a gateway on the civetweb server lacked
(--http-header-timeout-seconds, --worker-keepalive-seconds), so that the harness can run against
such a binary and show what it fails.
"""
import asyncio
import json
import os
import re
import resource
import select
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
import http_client as hc  # noqa: E402
from http_client import call, call_json, request_bytes, Conn, Sse  # noqa: E402

OLD_FLAGS = os.environ.get("PHI_HTTP_TEST_OLD_FLAGS") == "1"
# Room for 1,000 sequences at once on the tiny model (a block is 16 tokens; a stream here needs 3).
WORKER_ARGS = ["--max-running", "1024", "--max-waiting", "4096", "--max-batch-tokens", "8192",
               "--kv-cache-blocks", "4096"]
CHAT = "/v1/chat/completions"


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the gateway inherits it


def chat(content="hi", **kw):
    return {"messages": [{"role": "user", "content": content}], **kw}


def events(body):
    return Sse().feed(body)


def assert_openai_error(tc, obj, param=None):
    tc.assertIsInstance(obj, dict, obj)
    tc.assertIn("error", obj, obj)
    err = obj["error"]
    for k in ("message", "type", "param", "code"):
        tc.assertIn(k, err, obj)
    tc.assertIsInstance(err["message"], str)
    tc.assertTrue(err["message"], obj)
    if param is not None:
        tc.assertEqual(err["type"], "invalid_request_error", obj)
        tc.assertEqual(err["param"], param, obj)


class HttpHardeningTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise_fd_limit()
        cls.s = stack.Stack(workers=1, worker_args=WORKER_ARGS)
        cls.gw = cls.s.procs[-1]
        cls.port = cls.s.http_port
        status, _, body = call_json(cls.port, "GET", "/v1/models")
        cls.model = body["data"][0]["id"]

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    # --- helpers ---------------------------------------------------------------------------

    def new_gateway(self, *args):
        """A gateway of its own on the shared tokenizer and worker: (Proc, http port, gRPC port)."""
        # stack.wait() fails on any exited process: drop gateways that crashed or were stopped.
        for p in [p for p in self.s.procs if p.name == "gateway" and p.proc.poll() is not None]:
            print(f"\n[{p.name} pid {p.proc.pid} exited {p.proc.returncode}; log {p.log.name}]", flush=True)
            self.s.procs.remove(p)
        port, http_port, _ = self.s.add_gateway(args=list(args))
        return self.s.procs[-1], http_port, port

    def assert_alive(self, proc, port, what=""):
        time.sleep(0.05)
        self.assertIsNone(proc.proc.poll(), f"gateway died {what}: exit {proc.proc.returncode}\n{proc.tail()}")
        status, _, body = call_json(port, "POST", CHAT, chat(max_tokens=2), timeout=10)
        self.assertEqual(status, 200, f"after {what}: {body}")
        self.assertEqual(body["object"], "chat.completion")

    # --- body size -------------------------------------------------------------------------

    def test_body_size_limit_refused_before_buffering(self):
        """A 60 MB body and a body announced as 10^9 bytes (nothing sent) get 413; the gateway's RSS
        grows by < 50 MB (VmHWM and sampled VmRSS); it serves afterwards."""
        proc, port, _ = self.new_gateway()
        pid = proc.proc.pid
        self.assert_alive(proc, port, "warm-up")
        before = hc.proc_status(pid)
        results = {}
        with hc.Sampler(pid) as samp:
            # 1) Content-Length 10^9, no body: the answer must come from the headers alone.
            c = Conn(port, timeout=10)
            try:
                c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000000000\r\n\r\n")
                results["announced 1e9"] = c.read_head()[0]
            except (OSError, EOFError) as e:
                results["announced 1e9"] = f"{type(e).__name__}: {e}"
            finally:
                c.close()
            # 2) 60 MB of JSON (many tiny arrays: what a DOM parser balloons on), sent while watching
            #    for an early answer as a careful client does.
            results["60 MB body"] = self._send_big_body(port, 60_000_000)
        after = hc.proc_status(pid)
        growth_mb = max(after["VmHWM"] - before["VmHWM"], samp.peak_rss_kb - before["VmRSS"]) / 1024
        print(f"\n[body size] {results}; RSS {before['VmRSS'] / 1024:.0f} MB -> peak {samp.peak_rss_kb / 1024:.0f} MB"
              f" (VmHWM {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB), growth {growth_mb:.0f} MB",
              flush=True)
        self.assertEqual(results["announced 1e9"], 413, results)
        self.assertEqual(results["60 MB body"], 413, results)
        self.assertLess(growth_mb, 50)
        self.assert_alive(proc, port, "the large bodies")

    def _send_big_body(self, port, size):
        head = b'{"messages":[{"role":"user","content":"x"}],"pad":['
        k = (size - len(head) - 4) // 3
        body = head + b"[]," * (k - 1) + b"[]]}"
        body = memoryview(body + b" " * (size - len(body)))
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sent, got = 0, b""
        deadline = time.time() + 60
        try:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {size}\r\n\r\n".encode())
            while sent < size and time.time() < deadline:
                r, w, _ = select.select([sock], [sock], [], 1.0)
                if r:
                    d = sock.recv(1 << 16)
                    if not d:
                        break
                    got += d
                    if b"\r\n\r\n" in got:
                        break  # answered early: stop sending
                if w:
                    sent += sock.send(body[sent:sent + (1 << 20)])
            while b"\r\n\r\n" not in got:
                d = sock.recv(1 << 16)
                if not d:
                    break
                got += d
        except OSError as e:
            if b"\r\n\r\n" not in got:
                return f"{type(e).__name__} after {sent} bytes sent, no response"
        finally:
            sock.close()
        if b"\r\n\r\n" not in got:
            return f"connection closed after {sent} bytes sent, no response"
        return hc.parse_head(got.split(b"\r\n\r\n")[0] + b"\r\n\r\n")[0]

    # --- parsing ---------------------------------------------------------------------------

    def test_deep_nesting_is_a_400(self):
        """100,000 nested arrays inside a message's content: 400 in OpenAI's error shape, gateway alive."""
        proc, port, _ = self.new_gateway()
        depth = 100_000
        body = ('{"messages":[{"role":"user","content":' + "[" * depth + "]" * depth + "}]}").encode()
        try:
            status, _, obj = call_json(port, "POST", CHAT, body, timeout=20)
        except (OSError, EOFError) as e:
            time.sleep(0.5)
            self.fail(f"no response ({type(e).__name__}: {e}); gateway exit {proc.proc.poll()}\n{proc.tail()}")
        self.assertEqual(status, 400, obj)
        assert_openai_error(self, obj)
        self.assert_alive(proc, port, "a 100,000-deep body")

    def test_wrong_json_types_are_400_naming_the_openai_param(self):
        """A field of the wrong JSON type: 400, OpenAI's error shape, `param` = the OpenAI field name;
        the gateway is alive after each (a dead one is replaced so the next case still runs)."""
        cases = [
            (CHAT, chat(stream=1, max_tokens=2), "stream"),
            ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "echo": "yes"}, "echo"),
            (CHAT, chat(max_tokens=2.5), "max_tokens"),
            (CHAT, chat(max_tokens=2, temperature="hot"), "temperature"),
            (CHAT, chat(max_tokens=2, logprobs={}), "logprobs"),
        ]
        proc, port, _ = self.new_gateway()
        for path, body, param in cases:
            with self.subTest(param=param, body=body):
                if proc.proc.poll() is not None:
                    proc, port, _ = self.new_gateway()
                try:
                    status, _, obj = call_json(port, "POST", path, body, timeout=10)
                except (OSError, EOFError) as e:
                    time.sleep(0.5)
                    self.fail(f"no response ({type(e).__name__}); gateway exit {proc.proc.poll()}")
                self.assertEqual(status, 400, obj)
                assert_openai_error(self, obj, param)
                self.assert_alive(proc, port, f"{param}={body.get(param)!r}")

    # --- slow clients ----------------------------------------------------------------------

    def test_slow_clients_do_not_lock_anyone_out(self):
        """200 connections trickle header bytes (1 byte / 0.5 s) while normal chat requests (non-streamed,
        max_tokens 4) are each answered within 1 s; the server closes every slow one by its header
        timeout (3 s here; checked by 3 + 4 s)."""
        header_timeout, n_slow = 3.0, 200
        args = [] if OLD_FLAGS else ["--http-header-timeout-seconds", str(header_timeout)]
        proc, port, _ = self.new_gateway(*args)
        self.assert_alive(proc, port, "warm-up")
        payload = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100000
        socks, connect_errors = [], []
        for _ in range(n_slow):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.setblocking(False)
                socks.append(s)
            except OSError as e:
                connect_errors.append(str(e))
        t_start = time.time()
        pos = [0] * len(socks)
        closed_at = [None] * len(socks)
        answers = [b""] * len(socks)

        def tick():
            now = time.time()
            for i, s in enumerate(socks):
                if closed_at[i] is not None:
                    continue
                try:
                    d = s.recv(4096)
                    if d == b"":
                        closed_at[i] = now - t_start
                        continue
                    answers[i] += d
                except BlockingIOError:
                    pass
                except OSError:
                    closed_at[i] = now - t_start
                    continue
                try:
                    pos[i] += s.send(payload[pos[i]:pos[i] + 1])
                except BlockingIOError:
                    pass
                except OSError:
                    closed_at[i] = now - t_start

        import threading
        stop = threading.Event()

        def trickle():
            while not stop.is_set() and any(c is None for c in closed_at):
                tick()
                stop.wait(0.5)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        latencies = []
        try:
            time.sleep(0.3)
            while time.time() - t_start < header_timeout + 0.5:
                t0 = time.time()
                try:
                    status, _, body = call_json(port, "POST", CHAT, chat(max_tokens=4), timeout=5)
                    latencies.append((round(time.time() - t0, 3), status))
                except (OSError, EOFError) as e:
                    latencies.append((round(time.time() - t0, 3), f"{type(e).__name__}"))
                time.sleep(0.2)
            deadline = t_start + header_timeout + 4.0
            while time.time() < deadline and any(c is None for c in closed_at):
                time.sleep(0.1)
        finally:
            stop.set()
            t.join()
            for s in socks:
                s.close()
        open_left = sum(c is None for c in closed_at)
        closed = sorted(c for c in closed_at if c is not None)
        got_408 = sum(a.startswith(b"HTTP/1.1 408") for a in answers)
        print(f"\n[slow clients] {len(socks)} connected ({len(connect_errors)} connect errors); normal requests "
              f"(s, status): {latencies}; slow ones closed by the server: {len(closed)} "
              f"(first {closed[0] if closed else '-'} s, last {closed[-1] if closed else '-'} s, {got_408} with 408), "
              f"still open at {header_timeout + 4:.0f} s: {open_left}", flush=True)
        self.assertFalse(connect_errors)
        for lat, status in latencies:
            self.assertEqual(status, 200, latencies)
            self.assertLess(lat, 1.0, latencies)
        self.assertGreaterEqual(len(latencies), 5)
        self.assertEqual(open_left, 0, "slow clients not closed by the header timeout")
        self.assert_alive(proc, port, "200 slow clients")

    # --- 1,000 concurrent streams ----------------------------------------------------------

    def test_1000_concurrent_sse_streams(self):
        """1,000 SSE chat streams at once, one connection each, through one gateway: all complete with
        [DONE], the gateway holds all of them open at the same time (no stream finishes before the
        last one has begun), RSS < 512 MB and fewer threads than half the streams (no thread per
        stream). Prints the peaks."""
        n = 1000
        proc, port, _ = self.new_gateway()
        self.assert_alive(proc, port, "warm-up")
        body = json.dumps(chat("Tell me a story.", max_tokens=64, ignore_eos=True, stream=True)).encode()
        idle = hc.proc_status(proc.proc.pid)
        t0 = time.time()
        with hc.Sampler(proc.proc.pid) as samp:
            stats = asyncio.run(hc.run_streams(port, CHAT, [body] * n, timeout=90))
        wall = time.time() - t0
        print(f"\n[1000 streams] completed {stats.done}/{n} in {wall:.1f} s; at once (begun, not done) peak "
              f"{stats.peak}; statuses {stats.statuses}; errors {len(stats.errors)} {stats.errors[:3]}; "
              f"gateway RSS idle {idle['VmRSS'] / 1024:.0f} MB -> peak {samp.peak_rss_kb / 1024:.0f} MB, threads "
              f"idle {idle['Threads']} -> peak {samp.peak_threads}", flush=True)
        self.assertEqual(stats.done, n, stats.errors[:5])
        # All at once, up to client-side stragglers (a stream that ends before the last one began);
        # a thread-per-connection server peaks at its thread count (civetweb: 128).
        self.assertGreaterEqual(stats.peak, n * 95 // 100, "the gateway did not hold every stream at once")
        self.assertLess(samp.peak_rss_kb / 1024, 512)
        self.assertLess(samp.peak_threads, n // 2)
        self.assertNotIn("", stats.models)
        self.assert_alive(proc, port, "1,000 streams")

    # --- SIGTERM ---------------------------------------------------------------------------

    def _open_stream(self, port, max_tokens):
        c = Conn(port, timeout=15)
        c.send(request_bytes("POST", CHAT, chat("drain me", max_tokens=max_tokens, ignore_eos=True, stream=True)))
        status, headers = c.read_head()
        self.assertEqual(status, 200)
        st = {"conn": c, "sse": Sse(), "events": [], "end": None, "pieces": c.body_pieces(headers)}
        # Read up to the first event with text: the stream is under way.
        def has_text(e):
            try:
                return any((ch.get("delta") or {}).get("content") for ch in json.loads(e).get("choices", []))
            except (ValueError, AttributeError):
                return False
        while not any(has_text(e) for e in st["events"]):
            st["events"] += st["sse"].feed(next(st["pieces"]))
        return st

    def _finish_stream(self, st, deadline):
        """Reads to the end of the stream; returns 'done', 'error' or a description of the cut."""
        c = st["conn"]
        c.sock.settimeout(max(0.1, deadline - time.time()))
        try:
            for piece in st["pieces"]:
                st["events"] += st["sse"].feed(piece)
                if "[DONE]" in st["events"]:
                    break
        except socket.timeout:
            return f"still open at the deadline after {len(st['events'])} events"
        except (OSError, EOFError) as e:
            st["cut"] = f"{type(e).__name__}: {e}"
        finally:
            st["end"] = time.time()
            c.close()
        errors = [e for e in st["events"] if e.startswith("{") and "error" in json.loads(e)]
        if errors:
            return "error"
        if st["events"] and st["events"][-1] == "[DONE]":
            return "done"
        return f"cut without an error event ({st.get('cut', 'closed')}) after {len(st['events'])} events"

    def test_sigterm_mid_stream(self):
        """SIGTERM with streams open (--shutdown-grace-seconds 3). (a) Streams that finish within the grace
        end with [DONE] and the exit code is 0. (b) With the worker stopped (SIGSTOP) the streams cannot
        finish: each ends with an SSE error event (`data: {"error": ...}`) by grace + 2.5 s, never a
        bare cut; a new request during the drain gets 503 (or a refused connection: the listener is
        closed); the exit code is non-zero exactly when streams were cut."""
        grace = 3.0
        # (a) streams that complete within the grace.
        proc, port, _ = self.new_gateway("--shutdown-grace-seconds", str(grace))
        streams = [self._open_stream(port, 1500) for _ in range(3)]
        t_term = time.time()
        proc.proc.send_signal(signal.SIGTERM)
        ends = [self._finish_stream(st, t_term + grace + 2.5) for st in streams]
        rc = proc.proc.wait(timeout=grace + 10)
        print(f"\n[SIGTERM a] streams: {ends}; exit code {rc} after {time.time() - t_term:.2f} s", flush=True)
        for e in ends:
            self.assertIn(e, ("done", "error"))
        if all(e == "done" for e in ends):
            self.assertEqual(rc, 0, "no stream was cut: exit 0")
        else:
            self.assertNotEqual(rc, 0, "streams were cut: the exit code must say so")

        # (b) streams that cannot complete: the worker is stopped after their first tokens. Worker
        # keepalive pings off, so that the drain (not the hung-worker detection) is what ends them.
        proc, port, _ = self.new_gateway("--shutdown-grace-seconds", str(grace),
                                         *([] if OLD_FLAGS else ["--worker-keepalive-seconds", "0"]))
        worker = self.s.procs[1].proc
        streams = [self._open_stream(port, 1900) for _ in range(4)]
        worker.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.2)
            for st in streams:  # what arrived before the stop (a generator that raised is over: no timeouts here)
                try:
                    while "[DONE]" not in st["events"] and select.select([st["conn"].sock], [], [], 0.05)[0]:
                        st["events"] += st["sse"].feed(next(st["pieces"]))
                except (StopIteration, OSError, EOFError):
                    pass
            in_flight = sum("[DONE]" not in st["events"] for st in streams)
            self.assertGreater(in_flight, 0, "every stream finished before the worker was stopped: inconclusive")
            t_term = time.time()
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:
                status, _, obj = call_json(port, "POST", CHAT, chat(max_tokens=2), timeout=grace + 5)
                during = status
            except ConnectionRefusedError:
                during = "refused"
            except (OSError, EOFError) as e:
                during = f"{type(e).__name__}: {e}"
            ends = [self._finish_stream(st, t_term + grace + 2.5) for st in streams]
            late = [round(st["end"] - t_term, 2) for st in streams]
            try:
                rc = proc.proc.wait(timeout=grace + 10)
            except Exception:
                rc = None
            errs = [e[:160] for st in streams for e in st["events"] if e.startswith("{") and '"error"' in e][:1]
            print(f"[SIGTERM b] {in_flight} of {len(streams)} streams in flight; new request during the drain: "
                  f"{during}; streams: {ends}, ended at +{late} s (first error event: {errs}); exit code {rc} "
                  f"after {time.time() - t_term:.2f} s", flush=True)
        finally:
            worker.send_signal(signal.SIGCONT)
        self.assertIn(during, (503, "refused"), "a new request during the drain")
        for e in ends:
            self.assertIn(e, ("done", "error"))
        for e, t in zip(ends, late):
            if e == "error":  # cut by the drain: at the grace, not before (nothing else ends them here)
                self.assertGreater(t, grace - 0.5, f"ended before the grace: {late}")
        self.assertIsNotNone(rc, "the gateway did not exit")
        cut = any(e == "error" for e in ends)
        if cut:
            self.assertNotEqual(rc, 0, "streams were cut: the exit code must say so")
        else:
            self.assertEqual(rc, 0)
        stack.wait("worker back", lambda: self.s.worker_stub().GetStatus(
            stack.worker_pb2.GetStatusRequest(), timeout=1).ready, [self.s.procs[1]])

    # --- HTTP/1.1 and OpenAI surface -------------------------------------------------------

    def test_pipelined_requests_answered_in_order(self):
        """Two requests in one write on one keep-alive connection: two responses, in order."""
        c = Conn(self.port, timeout=15)
        try:
            c.send(request_bytes("POST", CHAT, chat(max_tokens=2)) + request_bytes("GET", "/v1/models"))
            s1, _, b1 = c.response()
            try:
                s2, _, b2 = c.response()
            except (OSError, EOFError) as e:
                self.fail(f"no second response: {type(e).__name__}: {e}")
        finally:
            c.close()
        self.assertEqual((s1, s2), (200, 200))
        self.assertEqual(json.loads(b1)["object"], "chat.completion")
        self.assertEqual(json.loads(b2)["object"], "list")

    def test_x_request_id(self):
        """X-Request-Id sent: echoed in the response; absent: the response carries a generated one."""
        rid = "hardening-test-3f2a9c"
        status, h, _ = call(self.port, "POST", CHAT, chat(max_tokens=2), headers={"X-Request-Id": rid})
        self.assertEqual(status, 200)
        self.assertEqual(h.get("x-request-id"), rid, h)
        status, h, _ = call(self.port, "POST", CHAT, chat(max_tokens=2))
        self.assertEqual(status, 200)
        self.assertTrue(h.get("x-request-id"), h)
        status, h2, _ = call(self.port, "POST", CHAT, chat(max_tokens=2))
        self.assertNotEqual(h.get("x-request-id"), h2.get("x-request-id"))

    def test_get_model_by_id(self):
        """GET /v1/models/{id}: the model object; an unknown id: 404 in OpenAI's error shape."""
        status, _, obj = call_json(self.port, "GET", f"/v1/models/{self.model}")
        self.assertEqual(status, 200, obj)
        self.assertEqual(obj.get("id"), self.model, obj)
        self.assertEqual(obj.get("object"), "model", obj)
        status, _, obj = call_json(self.port, "GET", "/v1/models/no-such-model")
        self.assertEqual(status, 404, obj)
        assert_openai_error(self, obj)

    def test_tokenize_detokenize_round_trip(self):
        """vLLM's POST /tokenize {"model","prompt"} -> {"count","max_model_len","tokens"} and
        POST /detokenize {"model","tokens"} -> {"prompt"}: the text comes back."""
        text = "Hello world, phi! ünïcödé 😀"
        status, _, obj = call_json(self.port, "POST", "/tokenize", {"model": self.model, "prompt": text})
        self.assertEqual(status, 200, obj)
        self.assertIsInstance(obj.get("tokens"), list, obj)
        self.assertTrue(obj["tokens"])
        self.assertTrue(all(isinstance(t, int) for t in obj["tokens"]))
        self.assertEqual(obj.get("count"), len(obj["tokens"]))
        self.assertEqual(obj.get("max_model_len"), 2048)  # the tiny model's max_position_embeddings
        status, _, back = call_json(self.port, "POST", "/detokenize", {"model": self.model, "tokens": obj["tokens"]})
        self.assertEqual(status, 200, back)
        self.assertEqual(back.get("prompt"), text)

    def _stream_events(self, path, body):
        status, h, raw = call(self.port, "POST", path, body, timeout=30)
        self.assertEqual(status, 200, raw[:300])
        evs = events(raw)
        self.assertEqual(evs[-1], "[DONE]", evs[-3:])
        return [json.loads(e) for e in evs[:-1]]

    def test_streams_carry_model_and_usage(self):
        """Streamed chat and completion with stream_options.include_usage: every chunk has a non-empty
        `model`; the last chunk before [DONE] carries usage (choices empty, totals add up)."""
        for path, body in ((CHAT, chat(max_tokens=5, stream=True, stream_options={"include_usage": True})),
                           ("/v1/completions", {"model": self.model, "prompt": "one two", "max_tokens": 5,
                                                "stream": True, "stream_options": {"include_usage": True}})):
            with self.subTest(path=path):
                chunks = self._stream_events(path, body)
                self.assertTrue(chunks)
                for c in chunks:
                    self.assertTrue(c.get("model"), f"chunk without a model: {c}")
                    self.assertIn(c.get("model"), (self.model,), c)
                usage = chunks[-1].get("usage")
                self.assertIsNotNone(usage, f"no usage chunk at the end: {chunks[-1]}")
                self.assertEqual(chunks[-1].get("choices"), [])
                self.assertGreater(usage["prompt_tokens"], 0)
                self.assertTrue(1 <= usage["completion_tokens"] <= 5, usage)
                self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + usage["completion_tokens"])
                self.assertEqual(len({c["id"] for c in chunks}), 1)

    def test_ids_are_random_and_unique_across_gateways(self):
        """Response ids are `chatcmpl-`/`cmpl-` + a random suffix (16+ characters), never repeated by
        two gateways (ids counted from 1 would repeat in every process)."""
        ports = [self.new_gateway()[1] for _ in range(2)]
        ids = []
        for p in ports + ports:
            status, _, obj = call_json(p, "POST", CHAT, chat(max_tokens=2))
            self.assertEqual(status, 200, obj)
            ids.append(obj["id"])
            status, _, obj = call_json(p, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2})
            self.assertEqual(status, 200, obj)
            ids.append(obj["id"])
        print(f"\n[ids] {ids}", flush=True)
        self.assertEqual(len(set(ids)), len(ids), ids)
        for i in ids:
            self.assertRegex(i, r"^(chatcmpl|cmpl)-[A-Za-z0-9_-]{16,}$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
