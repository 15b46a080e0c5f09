// Customer chat: one WebSocket, streamed tokens, reconnect with back-off (the socket and the
// bubbles: live.js, loaded first). All text is inserted with textContent, never as HTML.
// `ShopBotChat.mount(root, options)` drives any element holding the chat markup (the chat
// page's <main id="chat">, or the widget's panel inside a shadow root: static/widget.js).
(function () {
  "use strict";
  const live = window.ShopBotLive;
  const AUTHOR = { customer: "You", bot: "Assistant", agent: "Agent", system: "Notice" };

  // options: socketUrl(conversationId) -> the socket's URL; conversationId (to reopen);
  // onFrame(frame) sees every frame first; unreachable: the error shown when a socket closes
  // without ever opening (server down, or this site's origin refused).
  function mount(root, options) {
    const part = (selector) => root.querySelector(selector);
    const list = part(".messages");
    const form = part(".composer");
    const input = part(".composer textarea");
    const statusEl = part(".chat-status");
    const errorEl = part(".chat-error");
    const humanButton = part(".human-button");
    const banner = part(".handoff-banner");
    const rateBar = part(".rate-bar");
    const rateLabel = part(".rate-label");
    let socket = null;
    let conversationId = options.conversationId || "";

    function setStatus(text) { statusEl.textContent = text; }
    function showError(text) { errorEl.textContent = text; errorEl.hidden = !text; }

    // The text last sent, until the server echoes it back as stored: a refusal (rate limit,
    // overload, outage) or a socket that drops first puts it back in the box, so nothing the
    // customer typed is lost.
    let unsent = "";
    function unsentRestore() {
      if (unsent && !input.value) input.value = unsent;
      unsent = "";
    }

    function bubble(id, role) {
      return live.bubbleFor(list, id, () => {
        const intro = list.querySelector(".intro");
        if (intro) intro.remove();
        const el = document.createElement("li");
        el.className = `message message-${role}`;
        const author = document.createElement("span");
        author.className = "author";
        author.textContent = AUTHOR[role] || role;
        const text = document.createElement("div");
        text.className = "text";
        el.append(author, text);
        return el;
      });
    }

    // The knowledge-base articles a bot reply was based on.
    function renderSources(el, sources) {
      let box = el.querySelector(".sources");
      if (!sources || !sources.length) { if (box) box.remove(); return; }
      if (!box) {
        box = document.createElement("div");
        box.className = "sources";
        el.append(box);
      }
      box.textContent = "Sources: ";
      sources.forEach((source, i) => {
        const item = document.createElement("span");
        item.className = "source";
        item.textContent = source.title;
        if (i) box.append(", ");
        box.append(item);
      });
    }

    function render(message) {
      const el = bubble(message.message_id, message.role);
      live.bubbleFinish(el, el.querySelector(".text"), message.text);
      if (message.role === "bot" && message.message_id) addThumbs(el, message.message_id);
      if (message.role === "bot" || message.role === "agent") rateBar.hidden = false;
      renderSources(el, message.sources);
      list.scrollTop = list.scrollHeight;
    }

    // --- a person instead of the bot, and the customer's ratings ---------------------------
    function send(frame) {
      if (socket.send(frame)) return true;
      showError("Not connected yet; please retry in a moment.");
      return false;
    }

    function addThumbs(el, id) {
      if (el.querySelector(".thumbs")) return;
      const box = document.createElement("span");
      box.className = "thumbs";
      for (const [value, label, title] of [["up", "Helpful", "This answer helped"], ["down", "Not helpful", "This answer did not help"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.value = value;
        button.textContent = label;
        button.title = title;
        button.setAttribute("aria-label", title);
        button.addEventListener("click", () => send({ type: "rate_message", message_id: id, value }));
        box.append(button);
      }
      el.querySelector(".author").append(box);
    }

    // `notice`: the server's words for the status (status and history frames carry it).
    function applyStatus(status, notice, agentName) {
      const text = notice || "";
      banner.hidden = !text || status === "bot";
      banner.textContent = text;
      banner.classList.toggle("with-agent", status === "agent");
      humanButton.disabled = status === "waiting" || status === "agent";
      humanButton.textContent = status === "agent" ? (agentName ? `Chatting with ${agentName}` : "Chatting with a person") : "Talk to a person";
      if (status === "closed") { rateBar.hidden = false; rateLabel.textContent = "How did we do? Rate this conversation:"; }
    }

    function ratingSaved(frame) {
      if (frame.target === "conversation") {
        rateBar.querySelectorAll(".star").forEach((star) => star.classList.toggle("on", Number(star.dataset.score) <= frame.score));
        rateLabel.textContent = "Thanks for your rating!";
      } else {
        const el = list.querySelector(`[data-message-id="${CSS.escape(frame.message_id)}"]`);
        if (el) el.querySelectorAll(".thumbs button").forEach((b) => b.classList.toggle("chosen", b.dataset.value === frame.value));
      }
    }

    function onFrame(frame) {
      if (options.onFrame) options.onFrame(frame);
      switch (frame.type) {
        case "history": {
          if (frame.conversation_id) conversationId = frame.conversation_id;
          frame.messages.forEach(render);
          if (unsent) {  // reopened after a drop: stored after all, or to be sent again
            const stored = frame.messages.some((m) => m.role === "customer" && m.text === unsent);
            if (stored) unsent = "";
            else { unsentRestore(); showError("Your last message was not sent; press Send to try again."); }
          }
          applyStatus(frame.status, frame.notice);
          const last = frame.messages[frame.messages.length - 1];
          if (last && last.reply_failed) showError("The assistant could not answer your last message. Please try again, or ask for a person.");
          break;
        }
        case "queued":
          showError(`Many customers are chatting right now: you are number ${frame.position} in line`
            + (frame.wait_seconds ? ` (about ${frame.wait_seconds} s).` : "."));
          break;
        case "status":
          applyStatus(frame.status, frame.notice, frame.agent_name);
          break;
        case "rating_saved":
          ratingSaved(frame);
          break;
        case "conversation":
          conversationId = frame.conversation_id;
          break;
        case "message":
          if (frame.role === "customer") unsent = "";  // stored (one message at a time)
          render(frame);
          break;
        case "token": {
          if (!list.querySelector(`[data-message-id="${CSS.escape(frame.message_id)}"]`)) showError("");
          const el = bubble(frame.message_id, "bot");
          live.tokenAppend(el, el.querySelector(".text"), frame.text);
          list.scrollTop = list.scrollHeight;
          break;
        }
        case "bot_message":
          render({ ...frame, role: "bot" });
          break;
        case "error":
          showError(frame.detail);
          unsentRestore();
          break;
      }
    }


    humanButton.addEventListener("click", () => send({ type: "request_human" }));
    rateBar.querySelectorAll(".star").forEach((star) => {
      star.addEventListener("click", () => send({ type: "rate_conversation", score: Number(star.dataset.score) }));
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (!socket.isOpen()) { showError("Not connected yet; please retry in a moment."); return; }
      showError("");
      socket.send({ type: "customer_message", text });
      unsent = text;
      input.value = "";
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
    });
    socket = live.liveSocket(() => options.socketUrl(conversationId), {
      connecting: () => setStatus("Connecting…"),
      open: () => { setStatus("Online"); showError(""); },
      frame: onFrame,
      closed: (event, opened) => {
        setStatus("Reconnecting…");
        if (!opened) showError(options.unreachable || "Can't reach the chat right now; retrying…");
        if (event.code === 4404) conversationId = "";
      },
    });
  }

  window.ShopBotChat = { mount };

  // The chat page: <script src=".../chat.js" data-mount="#chat">, on the bot's own origin.
  const selector = document.currentScript && document.currentScript.dataset.mount;
  const page = selector && document.querySelector(selector);
  if (page) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    mount(page, {
      conversationId: page.dataset.conversationId,
      socketUrl: (id) => `${scheme}://${location.host}/ws/chat/${id ? `?conversation=${encodeURIComponent(id)}` : ""}`,
    });
  }
})();
