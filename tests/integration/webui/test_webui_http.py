#!/usr/bin/env python3
"""The chat page's files as the gateway serves them (no browser): content types, the security
headers (a Content-Security-Policy that allows only the gateway's origin, nosniff, no referrer),
ETag revalidation (304), HEAD, methods, unknown paths, nothing loaded from elsewhere, and
--no-web-ui turning the page off while the API stays."""
import http.client
import json
import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gateway"))
import stack  # noqa: E402

WEB_DIR = os.path.join(HERE, "..", "..", "..", "services", "gateway", "web")
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/static/style.css": ("style.css", "text/css; charset=utf-8"),
         "/static/favicon.svg": ("favicon.svg", "image/svg+xml")}


def request(port, method, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


class WebPageHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack()
        _, cls.off_port, _ = cls.s.add_gateway(args=["--no-web-ui"])
        _, cls.keyed_port, _ = cls.s.add_gateway(env={"PHI_API_KEYS": "sk-webui-test"})

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def test_files_types_and_security_headers(self):
        for path, (name, ctype) in FILES.items():
            with self.subTest(path=path):
                status, h, body = request(self.s.http_port, "GET", path)
                self.assertEqual(status, 200)
                self.assertEqual(h["content-type"], ctype)
                with open(os.path.join(WEB_DIR, name), "rb") as f:
                    self.assertEqual(body, f.read(), "the embedded file differs from the source")
                csp = h["content-security-policy"]
                self.assertIn("default-src 'none'", csp)
                self.assertIn("script-src 'self'", csp)
                self.assertIn("connect-src 'self'", csp)
                self.assertIn("frame-ancestors 'none'", csp)
                self.assertNotIn("unsafe-inline", csp)
                self.assertNotIn("unsafe-eval", csp)
                self.assertEqual(h["x-content-type-options"], "nosniff")
                self.assertEqual(h["referrer-policy"], "no-referrer")
                self.assertEqual(h["cache-control"], "no-cache")
                self.assertRegex(h["etag"], r'^"[0-9a-f]{32}"$')
        self.assertEqual(request(self.s.http_port, "GET", "/index.html")[2], request(self.s.http_port, "GET", "/")[2])

    def test_nothing_loaded_from_elsewhere_and_no_inline_script(self):
        html = request(self.s.http_port, "GET", "/")[2].decode()
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)", "inline script (the CSP would block it)")
        self.assertNotRegex(html, r"\son\w+\s*=", "inline event handler")
        self.assertNotRegex(html, r"\sstyle\s*=", "inline style attribute")
        for ref in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html):
            self.assertTrue(ref.startswith("/static/") or ref.startswith("#"), ref)
        css = request(self.s.http_port, "GET", "/static/style.css")[2].decode()
        self.assertNotRegex(css, r"@import|url\(", "the stylesheet loads nothing")
        js = request(self.s.http_port, "GET", "/static/app.js")[2].decode()
        self.assertNotRegex(js, r"\.innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function",
                            "app.js must not parse HTML strings or evaluate code")
        self.assertNotRegex(js, r"fetch\(\s*[\"']https?:", "app.js talks to its own origin only")

    def test_etag_revalidation_head_and_methods(self):
        status, h, _ = request(self.s.http_port, "GET", "/static/app.js")
        etag = h["etag"]
        for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
            status, h2, body = request(self.s.http_port, "GET", "/static/app.js", {"If-None-Match": inm})
            self.assertEqual((status, body), (304, b""), inm)
            self.assertEqual(h2["etag"], etag)
        self.assertEqual(request(self.s.http_port, "GET", "/static/app.js", {"If-None-Match": '"other"'})[0], 200)
        status, h, body = request(self.s.http_port, "HEAD", "/")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(int(h["content-length"]), os.path.getsize(os.path.join(WEB_DIR, "index.html")))
        status, h, body = request(self.s.http_port, "POST", "/")
        self.assertEqual(status, 405)
        self.assertEqual(json.loads(body)["error"]["message"], "/: use GET or HEAD")
        self.assertEqual(h["allow"], "GET, HEAD")
        for path in ("/static/nope.js", "/static/", "/static/index.html", "/static/../app.js", "/favicon.ico"):
            self.assertEqual(request(self.s.http_port, "GET", path)[0], 404, path)

    def test_no_web_ui_flag_and_keys(self):
        status, _, body = request(self.off_port, "GET", "/")
        self.assertEqual(status, 404, body)
        self.assertIn(b"no route GET /", body)
        self.assertEqual(request(self.off_port, "GET", "/static/app.js")[0], 404)
        self.assertEqual(request(self.off_port, "GET", "/v1/models")[0], 200)
        # With API keys on, the page itself is public (it asks for the key); the API is not.
        self.assertEqual(request(self.keyed_port, "GET", "/")[0], 200)
        self.assertEqual(request(self.keyed_port, "GET", "/v1/models")[0], 401)
        self.assertEqual(request(self.keyed_port, "GET", "/v1/models",
                                 {"Authorization": "Bearer sk-webui-test"})[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
