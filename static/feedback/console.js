// Agent console: one WebSocket to /ws/agent/ keeps the list and the open conversation live
// (the socket and the bubbles: chatbot/live.js, loaded first).
// Every text is inserted with textContent, never as HTML.
(function () {
  "use strict";
  const live = window.ShopBotLive;
  const STATUS_LABEL = { bot: "Bot answering", waiting: "Waiting for a human", agent: "With an agent", closed: "Closed" };
  const REASON_LABEL = { customer_asked: "Customer asked for a human", bot_unsure: "Bot unsure", flagged_words: "Flagged words", agent: "Agent took over" };
  const TIME = { hour: "2-digit", minute: "2-digit", hour12: false };
  const ROLE_LABEL = { customer: "Customer", bot: "Bot", agent: "Agent", system: "System" };
  const liveEl = document.getElementById("live-status");
  const toasts = document.getElementById("toasts");
  const waitingBadge = document.getElementById("waiting-badge");
  const waitingCount = document.getElementById("waiting-count");
  const queueBody = document.getElementById("queue-body");
  const view = document.getElementById("conversation");
  const conversationId = view ? view.dataset.conversationId : null;
  let socket = null;
  let myName = null;
  const lastStatus = {};

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function toast(text, kind) {
    const p = el("p", `toast toast-${kind || "info"}`, text);
    toasts.append(p);
    setTimeout(() => p.remove(), 6000);
  }

  function setWaiting(count) {
    waitingCount.textContent = String(count);
    waitingBadge.hidden = count === 0;
    document.title = (count ? `(${count}) ` : "") + document.title.replace(/^\(\d+\) /, "");
  }

  function statusBadge(status) {
    const span = el("span", `status status-${status}`, STATUS_LABEL[status] || status);
    span.dataset.status = status;
    return span;
  }

  // --- the conversation list -------------------------------------------------------------
  function queueRow(id) {
    if (!queueBody) return null;
    let row = queueBody.querySelector(`tr[data-conversation-id="${CSS.escape(id)}"]`);
    if (!row) {
      // A filtered list only shows what the server matched; new rows appear in the full list.
      if (document.getElementById("queue").dataset.filtered) return null;
      const empty = queueBody.querySelector("tr.empty");
      if (empty) empty.remove();
      row = el("tr", "row is-new");
      row.dataset.conversationId = id;
      const link = el("a");
      link.href = `/agent/c/${encodeURIComponent(id)}/`;
      link.append(el("span", "last-role"), " ", el("span", "last-text", "(no messages yet)"));
      const cells = [el("td"), el("td", "last"), el("td", "who"), el("td", "signals"), el("td", "when")];
      cells[0].append(statusBadge("bot"));
      cells[1].append(link);
      row.append(...cells);
    }
    queueBody.prepend(row);
    return row;
  }

  function rowStatus(row, status) {
    row.cells[0].replaceChildren(statusBadge(status));
    row.className = row.className.replace(/status-row-\w+/, "") + ` status-row-${status}`;
  }

  function rowTouch(row) {
    const when = row.cells[4];
    when.textContent = new Date().toLocaleTimeString([], TIME);
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  // --- the open conversation -------------------------------------------------------------
  const list = document.getElementById("messages");
  const replyForm = document.getElementById("reply-form");
  const replyText = document.getElementById("reply-text");
  const replySend = document.getElementById("reply-send");

  function bubble(id, role) {
    return live.bubbleFor(list, id, () => {
      const empty = list.querySelector(".empty");
      if (empty) empty.remove();
      const li = el("li", `amsg amsg-${role}`);
      li.id = `m-${id}`;
      const head = el("div", "amsg-head");
      head.append(el("span", "author", ROLE_LABEL[role] || role), " ", el("time", "", new Date().toLocaleTimeString([], { ...TIME, second: "2-digit" })));
      if (role === "bot") {
        const review = el("a", "muted review-link", "review");
        review.href = `#m-${id}`;
        review.addEventListener("click", () => setTimeout(() => location.reload(), 0));
        head.append(" ", review);
      }
      const body = el("div", "amsg-body");
      body.append(el("div", "text original"));
      li.append(head, body);
      return li;
    });
  }

  function showMessage(m) {
    const li = bubble(m.message_id, m.role);
    live.bubbleFinish(li, li.querySelector(".text.original"), m.text);
    li.scrollIntoView({ block: "nearest" });
  }

  function applyStatus(status, agentName) {
    if (!view) return;
    view.dataset.status = status;
    const holding = status === "agent" && agentName && agentName === myName;
    view.dataset.holding = holding ? "1" : "";
    document.getElementById("status-badge").replaceChildren(statusBadge(status));
    document.getElementById("status-text").textContent = STATUS_LABEL[status] + (status === "agent" && agentName ? ` · ${agentName}` : "");
    document.getElementById("take-over").hidden = status === "agent" || status === "closed";
    document.getElementById("hand-back").hidden = status === "bot" || status === "closed";
    document.getElementById("close-conv").hidden = status === "closed";
    replyText.disabled = !holding;
    replySend.disabled = !holding;
    document.getElementById("composer-hint").textContent = holding
      ? "You are answering this customer."
      : status === "agent" ? `${agentName || "Another agent"} is answering.` : "Take over to write to the customer.";
  }

  // --- frames ----------------------------------------------------------------------------
  function onFrame(frame) {
    const mine = conversationId && frame.conversation_id === conversationId;
    switch (frame.type) {
      case "hello":
        myName = frame.agent_name;
        setWaiting(frame.waiting);
        if (view) {
          socket.send({ type: "watch", conversation_id: conversationId });
          applyStatus(view.dataset.status, view.dataset.holding ? myName : null);
        }
        break;
      case "snapshot":
        if (mine) frame.messages.forEach(showMessage);
        break;
      case "conversation": {
        const row = queueRow(frame.conversation_id);
        if (row) rowTouch(row);
        break;
      }
      case "message": {
        const row = queueRow(frame.conversation_id);
        if (row) {
          row.querySelector(".last-role").textContent = frame.role;
          row.querySelector(".last-text").textContent = frame.text.length > 140 ? frame.text.slice(0, 139) + "…" : frame.text;
          rowTouch(row);
        }
        if (mine) showMessage(frame);
        break;
      }
      case "token": {
        if (!view || !frame.message_id) break;
        const li = bubble(frame.message_id, "bot");
        live.tokenAppend(li, li.querySelector(".text.original"), frame.text);
        break;
      }
      case "bot_message":
        if (view) showMessage({ ...frame, role: "bot" });
        break;
      case "status": {
        // A watched conversation's status arrives twice (agents group + its own group).
        const key = `${frame.status}|${frame.agent_name}`;
        if (lastStatus[frame.conversation_id] === key) break;
        lastStatus[frame.conversation_id] = key;
        const row = queueRow(frame.conversation_id);
        if (row) {
          rowStatus(row, frame.status);
          const who = frame.status === "agent" && frame.agent_name ? `with ${frame.agent_name}` : "";
          const why = frame.status === "waiting" ? REASON_LABEL[frame.handoff_reason] || "" : "";
          row.querySelector(".who").textContent = [why, who].filter(Boolean).join(" · ");
          rowTouch(row);
        }
        if (frame.status === "waiting") toast("A customer is waiting for a human.", "warning");
        if (mine) applyStatus(frame.status, frame.agent_name);
        break;
      }
      case "waiting":
        setWaiting(frame.count);
        break;
      case "review":
        if (mine && frame.agent_name !== myName) toast(`${frame.agent_name || "The customer"} updated this conversation (${frame.kind}); reload to see it.`);
        break;
      case "done":
        if (frame.action === "agent_message") { replyText.value = ""; replyText.focus(); }
        break;
      case "error":
        toast(frame.detail, "error");
        break;
    }
  }

  if (view) {
    // Live actions go over the socket; without it the forms post normally.
    document.querySelectorAll("form[data-live]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        if (!socket.isOpen()) return;
        event.preventDefault();
        socket.send({ type: form.dataset.live, conversation_id: conversationId });
      });
    });
    replyForm.addEventListener("submit", (event) => {
      if (!socket.isOpen()) return;
      event.preventDefault();
      const text = replyText.value.trim();
      if (!text) return;
      socket.send({ type: "agent_message", conversation_id: conversationId, text });
    });
    replyText.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); replyForm.requestSubmit(); }
    });
    document.getElementById("canned").addEventListener("change", (event) => {
      if (!event.target.value || replyText.disabled) return;
      replyText.value = replyText.value ? `${replyText.value}\n${event.target.value}` : event.target.value;
      event.target.value = "";
      replyText.focus();
    });
    const anchor = location.hash && document.querySelector(location.hash.replace(/[^#\w-]/g, ""));
    (anchor || list.lastElementChild || list).scrollIntoView({ block: "nearest" });
  }
  setTimeout(() => toasts.querySelectorAll(".toast").forEach((t) => t.remove()), 8000);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = live.liveSocket(() => `${scheme}://${location.host}/ws/agent/`, {
    connecting: () => { liveEl.textContent = "Connecting…"; },
    open: () => { liveEl.textContent = "Live"; liveEl.classList.add("on"); },
    frame: onFrame,
    closed: () => { liveEl.textContent = "Reconnecting…"; liveEl.classList.remove("on"); },
  });
})();
