// phi-serve chat page: talks to the gateway's OpenAI-compatible API on this origin.
// Hand-written, no dependencies, no build step. Model output is untrusted: it only ever reaches
// the page through textContent / createTextNode (the markdown renderer builds DOM nodes); no HTML
// string from the model or the network is ever parsed.
"use strict";

(() => {
  const STORE_KEY = "phi-serve.chat.v1";  // the conversation and settings (localStorage)
  const API_KEY_KEY = "phi-serve.api-key";  // the key, for this tab only (sessionStorage)
  // The model card's usage: greedy, at most 256 new tokens.
  const DEFAULTS = Object.freeze({ system: "You are a helpful assistant.", temperature: 0, top_p: 1, max_tokens: 256, model: "" });
  const RENDER_INTERVAL_MS = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), settingsToggle: $("settings-toggle"), settings: $("settings"),
    system: $("system-prompt"), temperature: $("temperature"), temperatureValue: $("temperature-value"),
    topP: $("top-p"), topPValue: $("top-p-value"), maxTokens: $("max-tokens"),
    keyForm: $("key-form"), apiKey: $("api-key"), resetSettings: $("reset-settings"), clear: $("clear"),
    notice: $("notice"), noticeText: $("notice-text"), noticeClose: $("notice-close"),
    messages: $("messages"), empty: $("empty"), composer: $("composer"), prompt: $("prompt"),
    send: $("send"), stop: $("stop"),
  };

  // ---------------------------------------------------------------- state

  let state = loadState();
  let controller = null;  // AbortController of the reply being streamed

  function loadState() {
    const fresh = { settings: { ...DEFAULTS }, messages: [] };
    try {
      const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
      if (!saved || typeof saved !== "object") return fresh;
      const s = saved.settings || {};
      const num = (v, d) => (typeof v === "number" && Number.isFinite(v) ? v : d);
      fresh.settings = {
        system: typeof s.system === "string" ? s.system : DEFAULTS.system,
        temperature: num(s.temperature, DEFAULTS.temperature),
        top_p: num(s.top_p, DEFAULTS.top_p),
        max_tokens: num(s.max_tokens, DEFAULTS.max_tokens),
        model: typeof s.model === "string" ? s.model : "",
      };
      if (Array.isArray(saved.messages)) {
        fresh.messages = saved.messages.filter((m) => m && typeof m.content === "string" &&
          ["user", "assistant", "error"].includes(m.role));
      }
    } catch (e) {
      // A corrupt or unreadable store: start over rather than not at all.
    }
    return fresh;
  }

  function saveState() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (e) {
      // Storage full or disabled (private mode): the page keeps working without it.
    }
  }

  function apiKey() {
    try { return sessionStorage.getItem(API_KEY_KEY) || ""; } catch (e) { return ui.apiKey.value.trim(); }
  }

  function requestHeaders(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // ---------------------------------------------------------------- markdown (safe)

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^ {0,3}([-*+]|\d{1,9}[.)])\s+/;

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  // Renders markdown `src` into `parent`: fenced code, headings, lists, quotes, rules,
  // paragraphs; inline code, bold, italics and http(s) links. Raw HTML stays text.
  function renderMarkdown(src, parent) {
    const lines = src.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i++; continue; }
      let m;
      if ((m = FENCE.exec(line))) {
        const mark = m[1];
        const closing = new RegExp("^ {0,3}" + (mark[0] === "`" ? "`" : "~") + "{" + mark.length + ",}\\s*$");
        const code = [];
        for (i++; i < lines.length && !closing.test(lines[i]); i++) code.push(lines[i]);
        i++;  // the closing fence (absent while a reply is still streaming)
        parent.append(codeBlock(code.join("\n"), m[2]));
      } else if ((m = HEADING.exec(line))) {
        // h1/h2 belong to the page; the model's headings start at h3.
        const h = el("h" + Math.min(6, m[1].length + 2));
        renderInline(m[2], h);
        parent.append(h);
        i++;
      } else if (RULE.test(line)) {
        parent.append(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ""));
        const q = el("blockquote");
        renderMarkdown(quoted.join("\n"), q);
        parent.append(q);
      } else if ((m = ITEM.exec(line))) {
        i = renderList(lines, i, /\d/.test(m[1]), parent);
      } else {
        const para = [line];
        for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) para.push(lines[i]);
        const p = el("p");
        renderInline(para.join("\n"), p);
        parent.append(p);
      }
    }
  }

  // A list from lines[i]; indented lines continue an item. Returns the index after it.
  function renderList(lines, i, ordered, parent) {
    const list = el(ordered ? "ol" : "ul");
    const first = ITEM.exec(lines[i])[1];
    if (ordered && parseInt(first, 10) !== 1) list.start = parseInt(first, 10);
    while (i < lines.length) {
      const m = ITEM.exec(lines[i]);
      if (!m || /\d/.test(m[1]) !== ordered) break;
      const text = [lines[i].slice(m[0].length)];
      for (i++; i < lines.length && /^\s{2,}\S/.test(lines[i]) && !ITEM.exec(lines[i]); i++) text.push(lines[i].trim());
      const li = el("li");
      renderInline(text.join("\n"), li);
      list.append(li);
    }
    parent.append(list);
    return i;
  }

  function codeBlock(code, lang) {
    const pre = el("pre");
    const head = el("div", "code-head");
    head.append(el("span", "code-lang", lang || "code"));
    const copy = el("button", "secondary", "Copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy the code" + (lang ? " (" + lang + ")" : ""));
    copy.addEventListener("click", () => copyText(code, copy));
    head.append(copy);
    const c = el("code", lang ? "language-" + lang.replace(/[^\w+#-]/g, "") : "", code);
    pre.append(head, c);
    return pre;
  }

  // Inline spans: `code`, **bold** / __bold__, *em* / _em_, [text](http(s) URL).
  const INLINE = new RegExp([
    "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)",        // 1, 2: code
    "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*",             // 3: strong
    "__(?=\\S)([\\s\\S]*?\\S)__(?!\\w)",             // 4: strong
    "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*",          // 5: em
    "(?<!\\w)_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?!\\w)",  // 6: em
    "\\[([^\\]\\n]+)\\]\\(\\s*([^\\s()]+)\\s*\\)",     // 7, 8: link
  ].join("|"), "g");

  function renderInline(text, parent) {
    let last = 0;
    INLINE.lastIndex = 0;
    const matches = [...text.matchAll(INLINE)];
    for (const m of matches) {
      if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      if (m[1] !== undefined) {
        const code = m[2].length > 2 && m[2].startsWith(" ") && m[2].endsWith(" ") ? m[2].slice(1, -1) : m[2];
        parent.append(el("code", "", code));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const s = el("strong");
        renderInline(m[3] !== undefined ? m[3] : m[4], s);
        parent.append(s);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const e = el("em");
        renderInline(m[5] !== undefined ? m[5] : m[6], e);
        parent.append(e);
      } else {
        const href = safeUrl(m[8]);
        if (href) {
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          renderInline(m[7], a);
          parent.append(a);
        } else {
          parent.append(document.createTextNode(m[0]));
        }
      }
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }

  // Only absolute http(s) links: no javascript:, data: or relative URLs into the gateway.
  function safeUrl(raw) {
    try {
      const u = new URL(raw);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  async function copyText(text, button) {
    const label = button.textContent;
    let ok = true;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // No clipboard API (plain http on another host is not a secure context): the old way.
      const ta = el("textarea", "visually-hidden");
      ta.value = text;
      ta.setAttribute("readonly", "");
      document.body.append(ta);
      ta.select();
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
      ta.remove();
    }
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = label; }, 1500);
  }

  // ---------------------------------------------------------------- conversation view

  const ROLE_NAMES = { user: "You", assistant: "Assistant", error: "Error" };

  function messageElement(msg) {
    const li = el("li", "msg " + msg.role);
    const head = el("div", "msg-head");
    head.append(el("span", "msg-role", ROLE_NAMES[msg.role]), el("span", "msg-stats"));
    if (msg.role !== "error") {
      const copy = el("button", "secondary msg-copy", "Copy");
      copy.type = "button";
      copy.setAttribute("aria-label", "Copy this message");
      copy.addEventListener("click", () => copyText(msg.content, copy));
      head.append(copy);
    }
    li.append(head, el("div", "msg-body"));
    li.phiMessage = msg;
    fillMessage(li);
    return li;
  }

  function fillMessage(li) {
    const msg = li.phiMessage;
    const body = li.querySelector(".msg-body");
    body.replaceChildren();
    if (msg.role === "assistant") renderMarkdown(msg.content, body);
    else body.textContent = msg.content;
    li.querySelector(".msg-stats").textContent = statsText(msg);
    const st = msg.stats || {};
    for (const [attr, v] of [["promptTokens", st.prompt_tokens], ["completionTokens", st.completion_tokens],
                             ["finish", msg.stopped ? "stopped" : st.finish]]) {
      if (v !== undefined && v !== null) li.dataset[attr] = String(v);
    }
  }

  function statsText(msg) {
    const st = msg.stats;
    if (!st) return "";
    const parts = [];
    if (msg.stopped) parts.push("stopped");
    if (typeof st.completion_tokens === "number") {
      parts.push(st.completion_tokens + " tokens");
    } else if (st.chunks) {
      parts.push("~" + st.chunks + " tokens");
    }
    if (st.tokens_per_s) parts.push(st.tokens_per_s.toFixed(1) + " tokens/s");
    if (typeof st.prompt_tokens === "number") parts.push("prompt " + st.prompt_tokens);
    if (typeof st.first_token_ms === "number") parts.push("first token " + Math.round(st.first_token_ms) + " ms");
    if (st.finish === "length") parts.push("max tokens reached");
    return parts.join(" · ");
  }

  function renderConversation() {
    ui.messages.replaceChildren(...state.messages.map(messageElement));
    ui.empty.hidden = state.messages.length > 0;
    scrollToEnd(true);
  }

  function appendMessage(msg) {
    state.messages.push(msg);
    const li = messageElement(msg);
    ui.messages.append(li);
    ui.empty.hidden = true;
    scrollToEnd(true);
    return li;
  }

  function scrollToEnd(force) {
    const box = ui.messages;
    const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    if (force || nearEnd) box.scrollTop = box.scrollHeight;
  }

  function showNotice(text) {
    ui.noticeText.textContent = text;
    ui.notice.hidden = false;
  }

  function hideNotice() {
    ui.notice.hidden = true;
    ui.keyForm.classList.remove("attention");
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  function unreachable(e) {
    return new ApiError("Cannot reach the gateway at " + location.origin + " (" + e.message +
                        "). Is phi-gateway running?", 0);
  }

  // An error response's message: OpenAI's {"error": {"message"}} or the body's first line.
  async function responseError(resp) {
    let message = "";
    try {
      const text = await resp.text();
      try {
        const j = JSON.parse(text);
        message = (j && j.error && j.error.message) || text;
      } catch (e) {
        message = text;
      }
    } catch (e) {
      message = e.message;
    }
    message = String(message).trim().slice(0, 2000) || resp.statusText;
    return new ApiError("The gateway answered " + resp.status + ": " + message, resp.status);
  }

  async function apiFetch(path, options) {
    let resp;
    try {
      resp = await fetch(path, options);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw unreachable(e);
    }
    if (!resp.ok) throw await responseError(resp);
    return resp;
  }

  // Server-sent events from `body`: calls onData(parsed JSON) for each "data:" event.
  // Returns true when the stream ended with OpenAI's [DONE], false when it was cut short.
  async function readEvents(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const boundary = /\r\n\r\n|\n\n|\r\r/;
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let m;
      while ((m = boundary.exec(buffer))) {
        const event = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        const data = event.split(/\r\n|\n|\r/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return true;
        let parsed;
        try {
          parsed = JSON.parse(data);
        } catch (e) {
          throw new ApiError("The gateway sent an event that is not JSON: " + data.slice(0, 200), 0);
        }
        onData(parsed);
      }
      if (done) return false;
    }
  }

  async function loadModels() {
    let list;
    try {
      const resp = await apiFetch("/v1/models", { headers: requestHeaders(false) });
      list = (await resp.json()).data || [];
    } catch (e) {
      ui.model.replaceChildren(el("option", "", "(no models)"));
      if (e.status === 401) askForKey(e.message);
      else showNotice("Could not list the models: " + e.message);
      return;
    }
    ui.model.replaceChildren(...list.map((m) => {
      const o = el("option", "", m.id + (m.max_model_len ? " (" + m.max_model_len + " tokens)" : ""));
      o.value = m.id;
      return o;
    }));
    if (!list.length) {
      ui.model.append(el("option", "", "(no models ready)"));
      showNotice("The gateway has no ready model yet: are its workers up?");
      return;
    }
    if (list.some((m) => m.id === state.settings.model)) ui.model.value = state.settings.model;
    state.settings.model = ui.model.value;
    saveState();
  }

  function askForKey(message) {
    showNotice("This gateway needs an API key (" + message + "). Enter it under Settings → API key and press " +
               "Use key.");
    ui.settings.classList.add("open");
    ui.settingsToggle.setAttribute("aria-expanded", "true");
    ui.keyForm.classList.add("attention");
    ui.apiKey.focus();
  }

  function conversationForRequest() {
    const messages = [];
    const system = state.settings.system.trim();
    if (system) messages.push({ role: "system", content: state.settings.system });
    for (const m of state.messages) {
      if ((m.role === "user" || m.role === "assistant") && m.content) messages.push({ role: m.role, content: m.content });
    }
    return messages;
  }

  async function send(text) {
    if (controller) return;
    hideNotice();
    appendMessage({ role: "user", content: text });
    const reply = { role: "assistant", content: "", stats: null };
    const li = appendMessage(reply);
    li.classList.add("streaming");
    li.setAttribute("aria-busy", "true");
    const body = {
      messages: conversationForRequest(),
      stream: true,
      stream_options: { include_usage: true },
      temperature: state.settings.temperature,
      top_p: state.settings.top_p,
      max_tokens: state.settings.max_tokens,
    };
    if (state.settings.model) body.model = state.settings.model;
    controller = new AbortController();
    setBusy(true);
    saveState();

    const t0 = performance.now();
    let tFirst = null, chunks = 0, usage = null, finish = null, timer = null, lastRender = 0;
    const render = () => {
      timer = null;
      lastRender = performance.now();
      fillMessage(li);
      scrollToEnd(false);
    };
    const stats = () => {
      const tEnd = performance.now();
      const n = usage ? usage.completion_tokens : chunks;
      const decodeS = tFirst === null ? 0 : (tEnd - tFirst) / 1000;
      return {
        prompt_tokens: usage ? usage.prompt_tokens : undefined,
        completion_tokens: usage ? usage.completion_tokens : undefined,
        chunks,
        // The first token is the prefill's; the rest over the time after it.
        tokens_per_s: n > 1 && decodeS > 0 ? (n - 1) / decodeS : undefined,
        first_token_ms: tFirst === null ? undefined : tFirst - t0,
        finish,
      };
    };
    try {
      const resp = await apiFetch("/v1/chat/completions", {
        method: "POST", headers: requestHeaders(true), body: JSON.stringify(body), signal: controller.signal,
      });
      const complete = await readEvents(resp.body, (event) => {
        if (event.error) throw new ApiError("The reply failed: " + (event.error.message || JSON.stringify(event.error)), 0);
        const choice = event.choices && event.choices[0];
        const delta = choice && choice.delta && choice.delta.content;
        if (typeof delta === "string" && delta) {
          if (tFirst === null) tFirst = performance.now();
          chunks++;
          reply.content += delta;
          if (!timer) timer = setTimeout(render, Math.max(0, RENDER_INTERVAL_MS - (performance.now() - lastRender)));
        }
        if (choice && choice.finish_reason) finish = choice.finish_reason;
        if (event.usage) usage = event.usage;
      });
      if (!complete) throw new ApiError("The reply was cut short: the gateway closed the stream before its end.", 0);
      reply.stats = stats();
    } catch (e) {
      reply.stats = stats();
      if (e.name === "AbortError") {
        reply.stopped = true;
      } else {
        appendError(e, reply);
      }
    } finally {
      if (timer) clearTimeout(timer);
      controller.abort();  // no-op after a complete reply; closes the stream after a failed one
      controller = null;
      li.classList.remove("streaming");
      li.removeAttribute("aria-busy");
      if (!reply.content && !reply.stopped) dropMessage(reply, li);
      else fillMessage(li);
      setBusy(false);
      saveState();
    }
  }

  function appendError(e, reply) {
    const message = e instanceof ApiError ? e.message : "Unexpected error: " + e.message;
    if (e.status === 401) askForKey(e.message);
    const errLi = messageElement({ role: "error", content: message });
    state.messages.push(errLi.phiMessage);
    ui.messages.append(errLi);
    scrollToEnd(true);
  }

  function dropMessage(msg, li) {
    const i = state.messages.indexOf(msg);
    if (i >= 0) state.messages.splice(i, 1);
    li.remove();
  }

  function stop() {
    if (controller) controller.abort();
  }

  function setBusy(busy) {
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
    ui.messages.setAttribute("aria-busy", busy ? "true" : "false");
    if (!busy && document.activeElement === ui.stop) ui.prompt.focus();
  }

  // ---------------------------------------------------------------- controls

  function showSettings() {
    const s = state.settings;
    ui.system.value = s.system;
    ui.temperature.value = String(s.temperature);
    ui.temperatureValue.textContent = s.temperature.toFixed(2);
    ui.topP.value = String(s.top_p);
    ui.topPValue.textContent = s.top_p.toFixed(2);
    ui.maxTokens.value = String(s.max_tokens);
  }

  function bindControls() {
    ui.system.addEventListener("input", () => { state.settings.system = ui.system.value; saveState(); });
    ui.temperature.addEventListener("input", () => {
      state.settings.temperature = Number(ui.temperature.value);
      ui.temperatureValue.textContent = state.settings.temperature.toFixed(2);
      saveState();
    });
    ui.topP.addEventListener("input", () => {
      state.settings.top_p = Number(ui.topP.value);
      ui.topPValue.textContent = state.settings.top_p.toFixed(2);
      saveState();
    });
    ui.maxTokens.addEventListener("input", () => {
      const n = Math.round(Number(ui.maxTokens.value));
      if (Number.isFinite(n) && n >= 1) {
        state.settings.max_tokens = n;
        saveState();
      }
    });
    ui.model.addEventListener("change", () => { state.settings.model = ui.model.value; saveState(); });
    ui.resetSettings.addEventListener("click", () => {
      state.settings = { ...DEFAULTS, model: state.settings.model };
      showSettings();
      saveState();
    });
    ui.clear.addEventListener("click", () => {
      stop();
      state.messages = [];
      saveState();
      renderConversation();
      ui.prompt.focus();
    });
    ui.settingsToggle.addEventListener("click", () => {
      const open = ui.settings.classList.toggle("open");
      ui.settingsToggle.setAttribute("aria-expanded", String(open));
    });
    ui.keyForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const key = ui.apiKey.value.trim();
      try {
        if (key) sessionStorage.setItem(API_KEY_KEY, key);
        else sessionStorage.removeItem(API_KEY_KEY);
      } catch (err) {
        // No sessionStorage: apiKey() reads the field instead.
      }
      hideNotice();
      loadModels();
      ui.prompt.focus();
    });
    ui.noticeClose.addEventListener("click", hideNotice);
    ui.composer.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = ui.prompt.value;
      if (!text.trim() || controller) return;
      ui.prompt.value = "";
      send(text);
    });
    ui.prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
        e.preventDefault();
        ui.composer.requestSubmit();
      }
    });
    ui.stop.addEventListener("click", stop);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && controller) {
        e.preventDefault();
        stop();
      }
    });
  }

  function init() {
    try { ui.apiKey.value = sessionStorage.getItem(API_KEY_KEY) || ""; } catch (e) { /* no storage */ }
    showSettings();
    bindControls();
    renderConversation();
    setBusy(false);
    loadModels();
    ui.prompt.focus();
  }

  init();
})();
