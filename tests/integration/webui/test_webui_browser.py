#!/usr/bin/env python3
"""The gateway's chat page in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against a real stack: tokenizer, worker and gateways on loopback, on a small random
model (its text is gibberish; what is checked is the page's behaviour, against the API).

  streamed text arrives in pieces, with the token counts of the reply's usage;
  Stop (button and Escape) cancels the generation on the worker (its running gauge falls to 0,
    its cancelled counter grows);
  the second turn carries the first (its prompt is exactly the whole conversation's tokens);
  model output with <script>, HTML and markdown is shown as text (no element, no script run);
  a gateway with API keys asks for the key and works once it is given;
  errors (unreachable gateway, a 400) are shown with their message; a phone-sized window works.

Exits 77 (ctest: skipped) only when chromium or chromedriver is not installed.
PHI_WEBUI_SCREENSHOT=FILE.png also saves a screenshot of a short conversation."""
import json
import os
import re
import shutil
import sys
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gateway"))

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    print("SKIP: chromium and chromium-driver (Debian packages; ./phi installs them) are not installed")
    sys.exit(77)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import stack  # noqa: E402

API_KEY = "sk-webui-browser-test"
SYSTEM = "You are a helpful assistant."


def metric(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def post(port, path, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def new_driver(width=1100, height=850):
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-extensions", "--no-first-run", f"--window-size={width},{height}",
              "--force-color-profile=srgb", "--force-prefers-reduced-motion", "--lang=en-US"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


class ChatPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack()
        cls.port = cls.s.http_port
        _, cls.keyed_port, _ = cls.s.add_gateway(env={"PHI_API_KEYS": API_KEY})
        cls.d = new_driver()

    @classmethod
    def tearDownClass(cls):
        cls.d.quit()
        cls.s.close()

    # ------------------------------------------------------------ helpers

    def open(self, port=None):
        """The page with empty storage (each test starts a new conversation)."""
        self.d.get(f"http://127.0.0.1:{port or self.port}/")
        self.d.execute_script("localStorage.clear(); sessionStorage.clear();")
        self.d.get_log("browser")  # drop the messages of earlier tests
        self.d.get(f"http://127.0.0.1:{port or self.port}/")
        self.wait(lambda: self.js("return document.getElementById('model').options.length > 0 && "
                                  "!document.getElementById('model').options[0].textContent.startsWith('(loading')"))

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def wait(self, cond, timeout=30, what="condition"):
        return WebDriverWait(self.d, timeout, poll_frequency=0.02).until(lambda _: cond(), what)

    def el(self, id_):
        return self.d.find_element(By.ID, id_)

    def set_max_tokens(self, n):
        box = self.el("max-tokens")
        box.clear()
        box.send_keys(str(n))

    def send(self, text):
        self.el("prompt").send_keys(text, Keys.ENTER)
        self.wait(lambda: self.el("stop").is_enabled() or self.messages()[-1]["role"] != "user", what="send")

    def wait_idle(self, timeout=60):
        self.wait(lambda: self.el("send").is_enabled() and not self.el("stop").is_enabled(), timeout, "reply end")

    def messages(self):
        """The conversation as the page keeps it (localStorage)."""
        return json.loads(self.js("return localStorage.getItem('phi-serve.chat.v1')") or '{"messages": []}')["messages"]

    def replies(self):
        return self.d.find_elements(By.CSS_SELECTOR, "#messages li.msg.assistant")

    def worker_metrics(self):
        return self.s.metrics(self.s.worker_metrics_ports[0])

    def severe_console_errors(self):
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    # ------------------------------------------------------------ tests

    def test_streams_a_reply_with_usage(self):
        self.open()
        self.assertEqual(self.el("system-prompt").get_attribute("value"), SYSTEM)
        self.assertEqual(self.el("temperature").get_attribute("value"), "0")
        self.assertEqual(self.el("max-tokens").get_attribute("value"), "256")
        served = [m["id"] for m in post_get(self.port, "/v1/models")["data"]]
        self.assertEqual(self.el("model").get_attribute("value"), served[0])
        self.set_max_tokens(400)
        # Every change of the reply's text while it streams, seen from inside the page.
        self.js("""window.__seen = [];
          new MutationObserver(() => {
            const li = [...document.querySelectorAll('#messages li.assistant')].pop();
            if (li && li.classList.contains('streaming'))
              window.__seen.push(li.querySelector('.msg-body').textContent.length);
          }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});""")
        self.send("Tell me about owls.")
        self.wait_idle()
        seen = sorted(set(n for n in self.js("return window.__seen") if n > 0))
        self.assertGreaterEqual(len(seen), 2, f"the reply should arrive in pieces; lengths seen: {seen}")
        # What the page shows is the model's greedy reply to this conversation, with its usage.
        want = post(self.port, "/v1/chat/completions", {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about owls."}],
            "temperature": 0, "top_p": 1, "max_tokens": 400})
        msgs = self.messages()
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant"])
        self.assertEqual(msgs[1]["content"], want["choices"][0]["message"]["content"])
        li = self.replies()[-1]
        usage = want["usage"]
        self.assertEqual(li.get_attribute("data-prompt-tokens"), str(usage["prompt_tokens"]))
        self.assertEqual(li.get_attribute("data-completion-tokens"), str(usage["completion_tokens"]))
        self.assertEqual(li.get_attribute("data-finish"), want["choices"][0]["finish_reason"])
        stats = li.find_element(By.CLASS_NAME, "msg-stats").text
        self.assertRegex(stats, rf"^{usage['completion_tokens']} tokens · [\d.]+ tokens/s · prompt "
                                rf"{usage['prompt_tokens']} · first token \d+ ms( · max tokens reached)?$")
        self.assertEqual(self.severe_console_errors(), [])

    def test_second_turn_carries_the_first(self):
        self.open()
        self.set_max_tokens(16)
        self.send("What is 2 + 2?")
        self.wait_idle()
        self.send("And 3 + 3?")
        self.wait_idle()
        msgs = self.messages()
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "user", "assistant"])
        conversation = [{"role": "system", "content": SYSTEM}] + [
            {"role": m["role"], "content": m["content"]} for m in msgs[:3]]
        want = post(self.port, "/tokenize", {"messages": conversation})["count"]
        first, second = (int(li.get_attribute("data-prompt-tokens")) for li in self.replies())
        self.assertEqual(second, want, "the second request's prompt is the whole conversation")
        self.assertGreater(second, first + int(self.replies()[0].get_attribute("data-completion-tokens")))
        # Reloading the page keeps the conversation (localStorage).
        self.d.refresh()
        self.wait(lambda: len(self.replies()) == 2)
        self.assertEqual(self.messages(), msgs)

    def test_stop_cancels_the_generation(self):
        self.open()
        self.set_max_tokens(1900)  # ~10 s on this model: long enough to stop mid-way
        for how in ("button", "escape"):
            with self.subTest(how=how):
                before = metric(self.worker_metrics(), "phi_worker_requests_total", finish_reason="cancelled")
                self.send(f"Write a long story ({how}).")
                self.wait(lambda: self.js("const r = [...document.querySelectorAll('#messages li.assistant')].pop();"
                                          "return r ? r.querySelector('.msg-body').textContent.length : 0") > 0,
                          what="first text")
                self.assertEqual(metric(self.worker_metrics(), "phi_worker_requests_running"), 1)
                if how == "button":
                    self.el("stop").click()
                else:
                    self.el("prompt").send_keys(Keys.ESCAPE)
                self.wait_idle(timeout=10)
                t0 = time.time()
                while metric(self.worker_metrics(), "phi_worker_requests_running") > 0 and time.time() - t0 < 5:
                    time.sleep(0.05)
                m = self.worker_metrics()
                self.assertEqual(metric(m, "phi_worker_requests_running"), 0)
                self.assertEqual(metric(m, "phi_worker_requests_total", finish_reason="cancelled"), before + 1)
                li = self.replies()[-1]
                self.assertEqual(li.get_attribute("data-finish"), "stopped")
                stats = li.find_element(By.CLASS_NAME, "msg-stats").text
                m = re.match(r"^stopped · ~(\d+) tokens", stats)
                self.assertTrue(m, stats)
                self.assertLess(int(m.group(1)), 1900)

    def test_model_output_is_text_not_html(self):
        """The model writes <script>, HTML and markdown (forced with guided_choice, so the real stack
        writes it): the page shows it as text."""
        evil = ("# Title <img src=x onerror=\"window.__xss='img'\">\n\n"
                "<script>window.__xss='script'</script> **bold** and <b>not bold</b> `<i>code</i>`\n\n"
                "[click](javascript:window.__xss='link') [site](https://example.com/x)\n\n"
                "```html\n<script>window.__xss='fence'</script>\n```\n"
                "- <iframe src=\"/\"></iframe> item\n")
        self.open()
        self.set_max_tokens(512)
        self.force_reply(evil)
        self.send("Say something dangerous.")
        self.wait_idle()
        self.assertEqual(self.messages()[-1]["content"], evil)
        for attempt in ("live", "reloaded"):
            with self.subTest(page=attempt):
                body = self.replies()[-1].find_element(By.CLASS_NAME, "msg-body")
                self.assertIsNone(self.js("return window.__xss"))
                for tag in ("script", "img", "b", "i", "iframe"):
                    self.assertEqual(body.find_elements(By.TAG_NAME, tag), [], tag)
                text = body.text
                for shown in ('<img src=x onerror="window.__xss=\'img\'">', "<script>window.__xss='script'</script>",
                              "<b>not bold</b>", "<i>code</i>", "<script>window.__xss='fence'</script>",
                              '<iframe src="/"></iframe> item'):
                    self.assertIn(shown, text)
                self.assertEqual(body.find_element(By.TAG_NAME, "strong").text, "bold")
                self.assertEqual(body.find_element(By.TAG_NAME, "h3").text, 'Title <img src=x onerror="window.__xss=\'img\'">')
                self.assertIn("window.__xss='fence'", body.find_element(By.CSS_SELECTOR, "pre code").text)
                links = body.find_elements(By.TAG_NAME, "a")
                self.assertEqual([a.get_attribute("href") for a in links], ["https://example.com/x"])
                self.assertIn("[click](javascript:window.__xss='link')", text)
                self.d.refresh()  # rendered again from localStorage
                self.wait(lambda: len(self.replies()) == 1)

    def force_reply(self, text):
        """Makes the page's next reply `text`, written by the real model: guided_choice
        (structured output) is added to the page's request. Checked first through the API."""
        probe_body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 512, "guided_choice": [text]}
        out = post(self.port, "/v1/chat/completions", probe_body)["choices"][0]["message"]["content"]
        self.assertEqual(out, text, "guided_choice did not force the reply")
        self.js("""const want = arguments[0], real = window.fetch.bind(window);
          window.fetch = (url, opts) => {
            if (String(url).endsWith('/v1/chat/completions')) {
              const b = JSON.parse(opts.body); b.guided_choice = [want]; opts = {...opts, body: JSON.stringify(b)};
            }
            return real(url, opts);
          };""", text)

    def test_api_key_prompt(self):
        self.open(self.keyed_port)
        notice = self.el("notice")
        self.assertTrue(notice.is_displayed())
        self.assertIn("needs an API key", notice.text)
        self.assertIn("401", notice.text)
        self.assertEqual(self.js("return document.activeElement.id"), "api-key")
        self.assertIn("attention", self.el("key-form").get_attribute("class"))
        self.el("api-key").send_keys("sk-wrong", Keys.ENTER)
        self.wait(lambda: "attention" in self.el("key-form").get_attribute("class"), what="wrong key refused")
        key = self.el("api-key")
        key.clear()
        key.send_keys(API_KEY, Keys.ENTER)
        served = post_get(self.port, "/v1/models")["data"][0]["id"]
        self.wait(lambda: self.el("model").get_attribute("value") == served, what="models listed with the key")
        self.assertFalse(self.el("notice").is_displayed())
        self.set_max_tokens(8)
        self.send("Hello with a key.")
        self.wait_idle()
        self.assertEqual(self.replies()[-1].get_attribute("data-completion-tokens"), "8")

    def test_errors_are_shown_with_their_message(self):
        self.open()
        # A prompt longer than the model's context: the gateway's 400 and its message.
        self.js("document.getElementById('prompt').value = arguments[0]", "owl " * 3000)
        self.el("prompt").send_keys(Keys.END, Keys.ENTER)
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, "#messages li.msg.error"), what="error shown")
        self.wait_idle()
        err = self.d.find_elements(By.CSS_SELECTOR, "#messages li.msg.error")[-1].text
        self.assertIn("The gateway answered 400:", err)
        self.assertRegex(err, r"token|context|long", "the gateway's own message is shown")
        self.assertEqual(self.replies(), [], "a reply that never started is not kept")
        # A gateway that has gone away.
        _, port, _ = self.s.add_gateway()
        gw = self.s.procs[-1]
        self.open(port)
        gw.stop()
        self.send("Anyone there?")
        self.wait_idle()
        err = self.d.find_elements(By.CSS_SELECTOR, "#messages li.msg.error")[-1].text
        self.assertIn(f"Cannot reach the gateway at http://127.0.0.1:{port}", err)

    def test_phone_sized_window(self):
        self.d.set_window_size(390, 844)
        try:
            self.open()
            self.assertFalse(self.el("settings").is_displayed())
            toggle = self.el("settings-toggle")
            self.assertTrue(toggle.is_displayed())
            toggle.click()
            self.assertTrue(self.el("settings").is_displayed())
            self.assertEqual(toggle.get_attribute("aria-expanded"), "true")
            toggle.click()
            for id_ in ("prompt", "send", "stop", "model"):
                self.assertTrue(self.el(id_).is_displayed(), id_)
            self.set_max_tokens_hidden(8)
            self.send("Hi from a phone.")
            self.wait_idle()
            self.assertEqual(len(self.replies()), 1)
            self.assertLessEqual(self.js("return document.documentElement.scrollWidth"),
                                 self.js("return window.innerWidth"), "no sideways scrolling")
        finally:
            self.d.set_window_size(1100, 850)

    def set_max_tokens_hidden(self, n):
        self.js("const e = document.getElementById('max-tokens'); e.value = arguments[0];"
                "e.dispatchEvent(new Event('input'));", str(n))

    def test_labels_and_keyboard(self):
        self.open()
        for id_ in ("prompt", "system-prompt", "temperature", "top-p", "max-tokens", "api-key", "model"):
            self.assertTrue(self.js("return document.getElementById(arguments[0]).labels.length > 0", id_), id_)
        self.assertEqual(self.el("messages").get_attribute("aria-live"), "polite")
        # Shift+Enter is a new line, not a send.
        box = self.el("prompt")
        box.send_keys("line one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "line two")
        self.assertEqual(box.get_attribute("value"), "line one\nline two")
        self.assertEqual(self.messages(), [])
        # Tab reaches the send button; focus is visible.
        self.js("document.getElementById('prompt').focus()")
        box.send_keys(Keys.TAB)
        self.assertEqual(self.js("return document.activeElement.id"), "send")
        self.assertNotEqual(self.js("return getComputedStyle(document.activeElement).outlineStyle"), "none")

    @unittest.skipUnless(os.environ.get("PHI_WEBUI_SCREENSHOT"), "PHI_WEBUI_SCREENSHOT not set")
    def test_zz_screenshot(self):
        """For the README: a short conversation, 1000x680 CSS pixels, light theme."""
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1000, "height": 680, "deviceScaleFactor": 1, "mobile": False})
        self.d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        try:
            self.open()
            self.set_max_tokens(40)
            self.send("Write a haiku about owls.")
            self.wait_idle()
            self.send("Now one about the sea, in a code block.")
            self.wait_idle()
            self.js("document.activeElement.blur()")
            path = os.environ["PHI_WEBUI_SCREENSHOT"]
            self.assertTrue(self.d.save_screenshot(path))
            self.assertLess(os.path.getsize(path), 200 << 10)
        finally:
            self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def post_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
