"""A fake Hugging Face Hub on loopback: the endpoints huggingface_hub 0.36 calls to download a
model (HfApi.model_info with files_metadata, then hf_hub_download per file), with the headers it
reads, plus the failures a real network and Hub produce.

  GET  /api/models/{repo}[/revision/{rev}]      model info: sha, siblings (size, blobId, lfs sha256)
  HEAD /{repo}/resolve/{rev}/{file}             X-Repo-Commit, ETag; LFS: 302 to /cdn/{sha256}
                                                with X-Linked-Etag and X-Linked-Size
  GET  /{repo}/resolve/{rev}/{file}, /cdn/{sha} the bytes; Range: bytes=N- answers 206

Errors carry the X-Error-Code header huggingface_hub maps to its exceptions (RepoNotFound,
GatedRepo, RevisionNotFound, EntryNotFound). Per-file faults: `drop_after` (bytes sent before
the connection is closed, on every GET while set) and `corrupt` (one byte flipped in what is
served; the advertised sha256 stays the true one).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    lfs_suffixes: tuple[str, ...] = (".safetensors",)
    gated: bool = False
    # API-reported sizes that differ from the real ones (to test the disk-space check).
    advertised_size: dict[str, int] = field(default_factory=dict)

    def is_lfs(self, name: str) -> bool:
        return name.endswith(self.lfs_suffixes)


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.drop_after: dict[str, int] = {}  # file name -> bytes sent before the connection closes
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def gets_of(self, name: str) -> list[str | None]:
        """Range headers of the GETs that fetched `name`'s bytes, in order."""
        with self._lock:
            return [rng for m, p, rng in self.requests if m == "GET" and p.endswith("/" + name)]

    # -----------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = urllib.parse.urlparse(h.path).path
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", urllib.parse.unquote(path), h.headers.get("Range")))
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        if m:
            return self._model_info(h, m.group(1), urllib.parse.unquote(m.group(2) or "main"))
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(h, head, m.group(1), urllib.parse.unquote(m.group(2)), urllib.parse.unquote(m.group(3)))
        m = re.match(r"^/cdn/([^/]+)/(.+)$", path)
        if m:
            return self._cdn(h, head, m.group(1), urllib.parse.unquote(m.group(2)))
        self._error(h, 404, None, head)

    def _error(self, h, status, code, head, commit=None):
        body = json.dumps({"error": code or "not found"}).encode()
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        if commit:
            h.send_header("X-Repo-Commit", commit)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _repo(self, h, repo_id, rev, head) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            # The real Hub answers 401 to an anonymous client for a repo that does not exist.
            self._error(h, 401 if "authorization" not in h.headers else 404, "RepoNotFound", head)
            return None
        if rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", head)
            return None
        return repo

    def _model_info(self, h, repo_id, rev):
        repo = self._repo(h, repo_id, rev, head=False)
        if repo is None:
            return
        siblings = []
        for name, data in sorted(repo.files.items()):
            size = repo.advertised_size.get(name, len(data))
            s = {"rfilename": name, "size": size, "blobId": git_blob_id(data)}
            if repo.is_lfs(name):
                s["lfs"] = {"size": size, "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(s)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                           "gated": "manual" if repo.gated else False, "siblings": siblings}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _resolve(self, h, head, repo_id, rev, name):
        repo = self._repo(h, repo_id, rev, head)
        if repo is None:
            return
        if repo.gated and "authorization" not in h.headers:
            return self._error(h, 401, "GatedRepo", head)
        data = repo.files.get(name)
        if data is None:
            return self._error(h, 404, "EntryNotFound", head, commit=repo.commit)
        if repo.is_lfs(name):
            sha = hashlib.sha256(data).hexdigest()
            h.send_response(302)
            h.send_header("Location", f"{self.url}/cdn/{sha}/{urllib.parse.quote(name)}")
            h.send_header("X-Repo-Commit", repo.commit)
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(len(data)))
            h.send_header("ETag", f'"{git_blob_id(data)}"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self._send_bytes(h, head, name, data, {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_id(data)}"'})

    def _cdn(self, h, head, sha, name):
        for repo in self.repos.values():
            data = repo.files.get(name)
            if data is not None and hashlib.sha256(data).hexdigest() == sha:
                return self._send_bytes(h, head, name, data, {"ETag": f'"{sha}"'})
        self._error(h, 404, None, head)

    def _send_bytes(self, h, head, name, data, headers):
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = h.headers.get("Range")
        m = re.match(r"^bytes=(\d+)-$", rng or "")
        if m and not head:
            start = int(m.group(1))
        body = data[start:]
        h.send_response(206 if start else 200)
        for k, v in headers.items():
            h.send_header(k, v)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        cut = self.drop_after.get(name)
        if cut is not None and cut < len(body):
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # mid-file: the client reads a short body
            return
        h.wfile.write(body)
