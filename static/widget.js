// The chat widget a shop embeds on its own site (README "Chat widget"):
//   <script src="https://shop-bot.example/static/widget.js" data-title="Chat with us" async></script>
// A chat bubble in a shadow root (the shop's CSS and ours never mix) opens the same chat as the
// bot's own page (static/chatbot/chat.js, loaded from the bot's origin). The socket goes
// straight to the bot's origin, which accepts only the shops in WIDGET_ALLOWED_ORIGINS. The
// bot's cookies are third-party here, so the conversation is kept by a session token that the
// server hands over and this script keeps in the shop origin's localStorage.
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script || window.ShopBotWidget) return;
  const data = script.dataset;
  const server = new URL(data.server || script.src, location.href).origin;
  const key = `shopbot:${server}`;
  const store = {
    get: (name) => { try { return localStorage.getItem(`${key}:${name}`); } catch (err) { return null; } },
    set: (name, value) => {
      try {
        if (value === null) localStorage.removeItem(`${key}:${name}`);
        else localStorage.setItem(`${key}:${name}`, value);
      } catch (err) { /* storage blocked: the chat still works, it just is not kept */ }
    },
  };

  const host = document.createElement("div");
  host.id = "shopbot-widget";
  const shadow = host.attachShadow({ mode: "open" });
  shadow.innerHTML = `
    <link rel="stylesheet" href="${server}/static/chatbot/widget.css">
    <button type="button" class="launcher" aria-expanded="false" aria-controls="panel">
      <span aria-hidden="true">&#128172;</span><span class="launcher-label"></span>
    </button>
    <section class="panel chat" id="panel" role="dialog" hidden>
      <header class="chat-header">
        <h1 class="title"></h1>
        <span class="chat-status" aria-live="polite"></span>
        <button type="button" class="human-button">Talk to a person</button>
        <button type="button" class="close" aria-label="Close the chat">&times;</button>
      </header>
      <p class="handoff-banner" role="status" hidden></p>
      <ol class="messages" aria-live="polite"><li class="message message-system intro"></li></ol>
      <p class="chat-error" role="alert" hidden></p>
      <div class="rate-bar" hidden>
        <span class="rate-label">How did we do?</span>
        <span class="stars" role="group" aria-label="Rate this conversation from 1 to 5"></span>
      </div>
      <form class="composer" autocomplete="off">
        <textarea name="text" rows="2" maxlength="${Number(data.maxChars) || 2000}" placeholder="Type your question…" aria-label="Your message" required></textarea>
        <button type="submit">Send</button>
      </form>
    </section>`;
  const part = (selector) => shadow.querySelector(selector);
  const title = data.title || "Chat with us";
  part(".launcher-label").textContent = title;
  part(".launcher").setAttribute("aria-label", title);
  part(".title").textContent = title;
  part(".panel").setAttribute("aria-label", title);
  part(".intro").textContent = data.greeting || "Hi! Ask us anything about orders, shipping, returns or your account.";
  for (let score = 1; score <= 5; score++) {
    const star = document.createElement("button");
    star.type = "button";
    star.className = "star";
    star.dataset.score = String(score);
    star.textContent = "★";
    star.setAttribute("aria-label", `${score} out of 5`);
    part(".stars").append(star);
  }
  if (data.position === "left") host.classList.add("left");
  if (/^#[0-9a-f]{3,8}$/i.test(data.color || "")) host.style.setProperty("--accent", data.color);

  // The chat client: live.js (socket and bubbles), then chat.js, from the bot's origin.
  function loadScript(name, done) {
    const script = document.createElement("script");
    script.src = `${server}/static/chatbot/${name}`;
    script.onload = done;
    script.onerror = () => { part(".chat-error").textContent = "The chat could not be loaded."; part(".chat-error").hidden = false; };
    document.head.append(script);
  }

  function loadClient(done) {
    if (window.ShopBotChat) { done(); return; }
    loadScript("live.js", () => loadScript("chat.js", done));
  }

  let mounted = false;
  function start() {
    if (mounted) return;
    mounted = true;
    const wsServer = server.replace(/^http/, "ws");
    loadClient(() => window.ShopBotChat.mount(part(".panel"), {
      socketUrl: (conversationId) => {
        const query = new URLSearchParams();
        const token = store.get("token");
        if (token) query.set("token", token);
        if (conversationId) query.set("conversation", conversationId);
        return `${wsServer}/ws/chat/?${query}`;
      },
      onFrame: (frame) => { if (frame.type === "session") store.set("token", frame.token); },
      unreachable: "The chat is not available right now; retrying…",
    }));
  }

  function setOpen(open) {
    part(".panel").hidden = !open;
    part(".launcher").setAttribute("aria-expanded", String(open));
    host.classList.toggle("open", open);
    store.set("open", open ? "1" : null);
    if (open) { start(); part(".composer textarea").focus(); }
  }
  part(".launcher").addEventListener("click", () => setOpen(part(".panel").hidden));
  part(".close").addEventListener("click", () => setOpen(false));

  function attach() {
    document.body.append(host);
    if (store.get("open")) setOpen(true); // it was open before this page load: carry on
  }
  window.ShopBotWidget = { open: () => setOpen(true), close: () => setOpen(false) };
  if (document.body) attach();
  else document.addEventListener("DOMContentLoaded", attach);
})();
