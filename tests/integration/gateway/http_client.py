"""Raw-socket HTTP/1.1 and SSE helpers for the gateway's HTTP tests and benchmarks (stdlib only).

Responses may be Content-Length, chunked or read-until-close (an SSE stream without chunked framing), so the
same client works against any HTTP/1.1 server. Nothing here hides a protocol error: a connection
that closes in the middle of a response raises EOFError.
"""
import asyncio
import json
import socket


def request_bytes(method, path, body=None, headers=None):
    """One HTTP/1.1 request; `body` may be bytes, str or a JSON-able object."""
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = (body if isinstance(body, str) else json.dumps(body)).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    lines += [f"{k}: {v}" for k, v in h.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def parse_head(head):
    """b"HTTP/1.1 200 OK\\r\\nA: b\\r\\n\\r\\n" -> (200, {"a": "b"}) (names lower-cased)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), v.strip())
    return int(parts[1]), headers


class Sse:
    """Incremental text/event-stream parser: feed() returns the `data` payloads of complete events."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf = (self.buf + data).replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self.buf:
            ev, self.buf = self.buf.split(b"\n\n", 1)
            data_lines = [ln[5:].lstrip(b" ") for ln in ev.split(b"\n") if ln.startswith(b"data:")]
            if data_lines:
                out.append(b"\n".join(data_lines).decode("utf-8", "replace"))
        return out


class Conn:
    """A blocking client connection that can read several responses (keep-alive, pipelining)."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        d = self.sock.recv(1 << 16)
        if not d:
            raise EOFError("connection closed by the server")
        self.buf += d

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        while True:
            status, headers = parse_head(self._until(b"\r\n\r\n"))
            if status >= 200:  # skip 100 Continue
                return status, headers

    def body_pieces(self, headers):
        """The body as it arrives (chunked, Content-Length or until the server closes)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    while self._until(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return
                data = self._exact(size + 2)
                yield data[:-2]
        elif "content-length" in headers:
            yield self._exact(int(headers["content-length"]))
        else:
            if self.buf:
                yield self.buf
                self.buf = b""
            while True:
                d = self.sock.recv(1 << 16)
                if not d:
                    return
                yield d

    def response(self):
        status, headers = self.read_head()
        return status, headers, b"".join(self.body_pieces(headers))


def call(port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection: (status, headers, body bytes)."""
    c = Conn(port, timeout)
    try:
        c.send(request_bytes(method, path, body, headers))
        return c.response()
    finally:
        c.close()


def call_json(port, method, path, body=None, headers=None, timeout=10.0):
    status, h, b = call(port, method, path, body, headers, timeout)
    try:
        return status, h, json.loads(b) if b else None
    except ValueError:
        return status, h, b


async def abody_pieces(reader, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            d = await reader.read(1 << 16)
            if not d:
                return
            yield d


class StreamStats:
    """What a set of concurrent SSE streams saw: `open` = response begun, [DONE] not yet seen."""

    def __init__(self):
        self.started = self.open = self.peak = self.done = 0
        self.errors = []        # (index, what)
        self.statuses = {}      # status -> count
        self.first_done_at = None
        self.all_started_at = None
        self.tokens = 0         # content chunks received
        self.models = set()     # "model" of every chunk


async def sse_stream(port, path, body, stats, idx, n_total, timeout, on_event=None):
    """One streamed request on its own connection; updates `stats`."""
    loop = asyncio.get_running_loop()
    writer = None
    began = False
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(request_bytes("POST", path, body))
        await writer.drain()
        status, headers = parse_head(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout))
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        if status != 200:
            text = b"".join([p async for p in abody_pieces(reader, headers)])
            stats.errors.append((idx, f"HTTP {status}: {text[:200]!r}"))
            return
        began = True
        stats.started += 1
        stats.open += 1
        stats.peak = max(stats.peak, stats.open)
        if stats.started == n_total:
            stats.all_started_at = loop.time()
        sse = Sse()
        done = False
        pieces = abody_pieces(reader, headers)
        while True:
            try:
                piece = await asyncio.wait_for(pieces.__anext__(), timeout)
            except StopAsyncIteration:
                break
            for ev in sse.feed(piece):
                if ev == "[DONE]":
                    done = True
                    continue
                try:
                    obj = json.loads(ev)
                except ValueError:
                    stats.errors.append((idx, f"bad event {ev[:100]!r}"))
                    continue
                if "error" in obj:
                    stats.errors.append((idx, f"error event {ev[:200]}"))
                    continue
                stats.models.add(obj.get("model"))
                for ch in obj.get("choices", []):
                    if (ch.get("delta") or {}).get("content") or ch.get("text"):
                        stats.tokens += 1
                if on_event:
                    on_event(obj)
            if done:
                break
        if done:
            stats.done += 1
            if stats.first_done_at is None:
                stats.first_done_at = loop.time()
        else:
            stats.errors.append((idx, "stream ended without [DONE]"))
    except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
            ValueError) as e:
        stats.errors.append((idx, f"{type(e).__name__}: {e}"))
    finally:
        if began:
            stats.open -= 1
        if writer is not None:
            writer.close()


async def run_streams(port, path, bodies, timeout=60.0):
    """All `bodies` streamed at once, one connection each; returns StreamStats."""
    stats = StreamStats()
    await asyncio.gather(*(sse_stream(port, path, b, stats, i, len(bodies), timeout) for i, b in enumerate(bodies)))
    return stats


def proc_status(pid):
    """{"VmRSS": kB, "VmHWM": kB, "Threads": n} from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


class Sampler:
    """Samples a process's RSS and thread count every `interval` s in a thread; peaks in .peak_*."""

    def __init__(self, pid, interval=0.02):
        import threading
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_threads = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        try:
            s = proc_status(self.pid)
        except OSError:
            return
        self.peak_rss_kb = max(self.peak_rss_kb, s.get("VmRSS", 0))
        self.peak_threads = max(self.peak_threads, s.get("Threads", 0))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._sample()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample()
