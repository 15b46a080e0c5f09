// The staff playground: the same chat with several model versions, side by side. Each column
// keeps its own history (a version answers what it said itself); every reply streams from
// POST playground/reply/ as JSON lines. Text goes in with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("playground");
  const form = document.getElementById("playground-form");
  const question = document.getElementById("question");
  const columnsEl = document.getElementById("columns");
  const errorEl = document.getElementById("playground-error");
  const grounded = document.getElementById("grounded");
  const maxColumns = Number(root.dataset.maxColumns);
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  let columns = new Map(); // version id -> {el, log, history}

  function showError(text) { errorEl.textContent = text; errorEl.hidden = !text; }
  function chosen() { return [...form.querySelectorAll("input[name=version]:checked")]; }

  function column(box) {
    if (!columns.has(box.value)) {
      const el = document.createElement("article");
      el.className = "column";
      el.dataset.version = box.dataset.number;
      const title = document.createElement("h2");
      title.textContent = `v${box.dataset.number} (${box.dataset.status})`;
      const log = document.createElement("div");
      log.className = "log";
      el.append(title, log);
      columnsEl.append(el);
      columns.set(box.value, { el, log, history: [] });
    }
    return columns.get(box.value);
  }

  function line(log, kind, text) {
    const el = document.createElement("p");
    el.className = `turn turn-${kind}`;
    el.textContent = text;
    log.append(el);
    return el;
  }

  async function ask(versionId, col, text) {
    col.history.push({ role: "user", content: text });
    line(col.log, "user", `You: ${text}`);
    const reply = line(col.log, "assistant", "");
    reply.classList.add("streaming");
    const meta = line(col.log, "meta", "");
    let answer = "";
    try {
      const response = await fetch(root.dataset.replyUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ version_id: Number(versionId), messages: col.history, grounded: grounded.checked }),
      });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
        throw new Error(problem.detail);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const raw of lines.filter(Boolean)) {
          const event = JSON.parse(raw);
          if (event.type === "token") { answer += event.text; reply.textContent = answer; }
          else if (event.type === "sources" && event.sources.length) {
            line(col.log, "sources", "Sources: " + event.sources.map((s) => s.title).join(", "));
            col.log.append(reply, meta);
          } else if (event.type === "done") meta.textContent = `${event.token_count} tokens in ${event.seconds} s`;
          else if (event.type === "error") throw new Error(event.detail);
        }
      }
      col.history.push({ role: "assistant", content: answer });
    } catch (err) {
      col.history.pop(); // the question stays unanswered: it is not part of this history
      reply.classList.add("turn-error");
      reply.textContent = `Error: ${err.message}`;
    } finally {
      reply.classList.remove("streaming");
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = question.value.trim();
    const boxes = chosen();
    if (!text) return;
    if (!boxes.length || boxes.length > maxColumns) { showError(`Choose 1 to ${maxColumns} versions.`); return; }
    showError("");
    question.value = "";
    const button = document.getElementById("ask-button");
    button.disabled = true;
    await Promise.all(boxes.map((box) => ask(box.value, column(box), text)));
    button.disabled = false;
    question.focus();
  });
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("reset-button").addEventListener("click", () => { columns = new Map(); columnsEl.replaceChildren(); });
})();
