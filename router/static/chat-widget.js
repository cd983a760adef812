/*
 * Chat widget of the router daemon. No dependencies. Embed with one tag:
 *
 *   <script src="https://support.example.com/chat/widget.js" async
 *           data-title="Chat with us"></script>
 *
 * It talks to wss://<the script's host>/chat/ws (JSON protocol in
 * docs/chat-protocol.md) and keeps the visitor's signed token in localStorage.
 * After a reload the server sends the conversation it keeps (the visitor's
 * messages and the replies) and the widget draws it again; after a network
 * blink it asks only for what came after the last event seen. Messages the
 * server has not acknowledged yet are kept and re-sent (they carry their own
 * id, so a re-send is never a duplicate). An e-mail address the visitor
 * gives is confirmed with the code the server e-mails to it. A server that
 * is busy (every widget reconnecting after a restart) says when to come back
 * (retry_after); the widget waits that long, jittered, so the widgets it
 * turned away do not all come back in the same second.
 * Licence: GPL-3.0-or-later.
 */
(function () {
  "use strict";
  var script = document.currentScript ||
    document.querySelector('script[src*="/chat/widget.js"]');
  var base = new URL(script && script.src ? script.src : location.href);
  var wsUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/chat/ws";
  var title = (script && script.getAttribute("data-title")) || "Chat with us";
  var store = window.localStorage;
  var KEY = "router-chat:" + base.host;

  function load() {
    try { return JSON.parse(store.getItem(KEY) || "{}"); } catch (e) { return {}; }
  }
  function save(state) {
    try { store.setItem(KEY, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }
  var state = load();             // {token, pending: [{id, text}]}
  state.pending = state.pending || [];
  delete state.last;              // (older versions resumed from it across reloads)

  var css = [
    ".rc-button{position:fixed;right:20px;bottom:20px;z-index:2147483000;",
    "background:#1b5e9f;color:#fff;border:0;border-radius:24px;padding:12px 18px;",
    "font:15px/1.2 system-ui,sans-serif;cursor:pointer;box-shadow:0 2px 8px #0004}",
    ".rc-button:focus-visible,.rc-panel :focus-visible{outline:3px solid #f5a623;",
    "outline-offset:2px}",
    ".rc-panel{position:fixed;right:20px;bottom:76px;z-index:2147483000;width:340px;",
    "max-width:calc(100vw - 40px);height:480px;max-height:calc(100vh - 100px);",
    "display:flex;flex-direction:column;background:#fff;color:#222;border-radius:12px;",
    "box-shadow:0 4px 24px #0005;font:15px/1.4 system-ui,sans-serif;overflow:hidden}",
    ".rc-panel[hidden]{display:none}",
    ".rc-head{background:#1b5e9f;color:#fff;padding:10px 14px;display:flex;",
    "justify-content:space-between;align-items:center}",
    ".rc-head h2{font-size:16px;margin:0}",
    ".rc-close{background:none;border:0;color:#fff;font-size:22px;cursor:pointer}",
    ".rc-log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px}",
    ".rc-msg{max-width:85%;padding:7px 10px;border-radius:10px;white-space:pre-wrap;",
    "word-wrap:break-word}",
    ".rc-me{align-self:flex-end;background:#dcebfa}",
    ".rc-agent{align-self:flex-start;background:#f0f0f0}",
    ".rc-system{align-self:center;background:#fff8e1;font-size:13px;text-align:center}",
    ".rc-pending{opacity:.6}",
    ".rc-status{font-size:12px;color:#666;padding:0 12px}",
    ".rc-form{display:flex;gap:6px;padding:8px;border-top:1px solid #ddd}",
    ".rc-form textarea{flex:1;resize:none;height:42px;font:inherit;padding:6px}",
    ".rc-form button,.rc-email button{background:#1b5e9f;color:#fff;border:0;",
    "border-radius:6px;padding:0 12px;cursor:pointer;font:inherit}",
    ".rc-email{display:flex;gap:6px;padding:0 8px 8px;font-size:13px;align-items:center}",
    ".rc-email input{flex:1;font:inherit;padding:4px}",
    ".rc-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}",
    "@media (max-width:480px){.rc-panel{right:0;bottom:0;width:100vw;max-width:100vw;",
    "height:100vh;max-height:100vh;border-radius:0}}"
  ].join("");

  var style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  var button = el("button", {"class": "rc-button", "type": "button",
                             "aria-haspopup": "dialog", "aria-expanded": "false"}, title);
  var panel = el("section", {"class": "rc-panel", "role": "dialog", "aria-label": title,
                             "hidden": ""});
  var head = el("div", {"class": "rc-head"});
  head.appendChild(el("h2", {}, title));
  var close = el("button", {"class": "rc-close", "type": "button", "aria-label": "Close chat"},
                 "\u00d7");
  head.appendChild(close);
  var log = el("div", {"class": "rc-log", "role": "log", "aria-live": "polite",
                       "aria-label": "Conversation"});
  var status = el("div", {"class": "rc-status", "aria-live": "polite"});
  var form = el("form", {"class": "rc-form"});
  var label = el("label", {"for": "rc-text", "class": "rc-sr"}, "Your message");
  var input = el("textarea", {"id": "rc-text", "name": "text", "rows": "2",
                              "placeholder": "Write a message\u2026", "maxlength": "4000"});
  var send = el("button", {"type": "submit"}, "Send");
  form.appendChild(label);
  form.appendChild(input);
  form.appendChild(send);
  var emailForm = el("form", {"class": "rc-email"});
  var emailLabel = el("label", {"for": "rc-email"}, "No one online? Get the answer by e-mail:");
  var email = el("input", {"id": "rc-email", "type": "email", "name": "email",
                           "autocomplete": "email", "placeholder": "you@example.com"});
  var emailSend = el("button", {"type": "submit"}, "OK");
  emailForm.appendChild(emailLabel);
  emailForm.appendChild(email);
  emailForm.appendChild(emailSend);
  [head, log, status, form, emailForm].forEach(function (n) { panel.appendChild(n); });
  document.body.appendChild(button);
  document.body.appendChild(panel);

  var shown = {};   // event ids already on screen
  function show(text, who, id, pending) {
    if (id && shown[id]) { return null; }
    if (id) { shown[id] = true; }
    var node = el("div", {"class": "rc-msg rc-" + who + (pending ? " rc-pending" : "")}, text);
    // messages not stored yet stay last, below the conversation being redrawn
    log.insertBefore(node, pending ? null : log.querySelector(".rc-pending"));
    log.scrollTop = log.scrollHeight;
    return node;
  }
  var bubbles = {};  // the visitor's messages on screen, by client id
  state.pending.forEach(function (m) { bubbles[m.id] = show(m.text, "me", null, true); });
  function open(yes) {
    panel.hidden = !yes;
    button.setAttribute("aria-expanded", String(yes));
    if (yes) { input.focus(); connect(); } else { button.focus(); }
  }
  button.addEventListener("click", function () { open(panel.hidden); });
  close.addEventListener("click", function () { open(false); });
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") { open(false); } });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });

  var ws = null, retry = 0;
  var comeBackAt = 0;   // a busy server asked us to wait until then (ms)
  var lastSeen = null;  // last event on screen; null after a reload: redraw it all
  var timer = null;
  function later(delay) {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(function () { timer = null; connect(); }, delay);
  }
  function connect() {
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) { return; }
    if (Date.now() < comeBackAt) { later(comeBackAt - Date.now()); return; }
    status.textContent = "Connecting\u2026";
    ws = new WebSocket(wsUrl);
    ws.onopen = function () {
      retry = 0;
      var tz = "";
      try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { /* old */ }
      ws.send(JSON.stringify({type: "hello", token: state.token, last_seen: lastSeen,
                              timezone: tz, locale: navigator.language, page: location.href}));
    };
    ws.onmessage = function (e) {
      var f = JSON.parse(e.data);
      if (f.type === "welcome") {
        state.token = f.token;
        save(state);
        status.textContent = "";
        state.pending.forEach(function (m) { ws.send(JSON.stringify(
          {type: "message", id: m.id, text: m.text})); });
      } else if (f.type === "ack") {
        state.pending = state.pending.filter(function (m) { return m.id !== f.id; });
        save(state);
        if (bubbles[f.id]) { bubbles[f.id].classList.remove("rc-pending"); }
      } else if (f.type === "message") {
        lastSeen = f.event;
        if (f.from === "visitor" && f.id && bubbles[f.id]) {
          shown[f.event] = true;      // sent from this page: already on screen
        } else if (f.from === "visitor") {
          bubbles[f.id] = show(f.text, "me", f.event);
        } else {
          show(f.text, f.from === "agent" ? "agent" : "system", f.event);
        }
      } else if (f.type === "email_ok") {
        email.value = "";
        if (f.code_sent) {
          emailMode("code", "We e-mailed a code to " + f.email + ". Type it here:");
        } else {
          emailLabel.textContent = "Noted: " + f.email + ".";
        }
      } else if (f.type === "email_verified") {
        emailMode("done", "Thank you: we will answer at " + f.email + ".");
      } else if (f.type === "error") {
        status.textContent = f.message;
        if (f.retry_after) {
          // busy or unavailable: the server closes the socket; come back after
          // retry_after seconds, jittered (half to one and a half times it)
          comeBackAt = Date.now() + f.retry_after * 1000 * (0.5 + Math.random());
        }
        if (f.code === "bad_token") { state.token = null; lastSeen = null; save(state); }
        if (f.code === "no_code") { emailMode("email", "Your e-mail address:"); }
      }
    };
    ws.onclose = function () {
      if (panel.hidden) { return; }
      if (!status.textContent || Date.now() >= comeBackAt) {
        status.textContent = "Reconnecting\u2026";
      }
      retry = Math.min(retry + 1, 6);
      // exponential backoff, jittered, and never before a busy server's
      // retry_after
      var delay = 250 * Math.pow(2, retry) * (1 + Math.random());
      later(Math.max(delay, comeBackAt - Date.now()));
    };
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    var id = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    state.pending.push({id: id, text: text});
    save(state);
    bubbles[id] = show(text, "me", null, true);
    input.value = "";
    if (ws && ws.readyState === 1) {
      ws.send(JSON.stringify({type: "message", id: id, text: text}));
    } else {
      connect();
    }
  });
  var asking = "email";   // what the small form asks for: email, code, or done
  function emailMode(mode, text) {
    asking = mode;
    emailLabel.textContent = text;
    email.value = "";
    email.hidden = emailSend.hidden = mode === "done";
    email.setAttribute("type", mode === "code" ? "text" : "email");
    email.setAttribute("inputmode", mode === "code" ? "numeric" : "email");
    email.setAttribute("autocomplete", mode === "code" ? "one-time-code" : "email");
    email.setAttribute("placeholder", mode === "code" ? "123456" : "you@example.com");
    if (mode === "code") { email.focus(); }
  }
  emailForm.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!email.value || !ws || ws.readyState !== 1) { return; }
    ws.send(JSON.stringify(asking === "code" ? {type: "verify", code: email.value.trim()}
                                             : {type: "email", email: email.value}));
  });
  if (state.token) { connect(); }   // resume quietly: replies that came meanwhile
})();
