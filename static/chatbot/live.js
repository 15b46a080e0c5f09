// What the customer chat (chat.js, on the chat page and in the widget) and the agent console
// (feedback/console.js) share: a WebSocket that reconnects with back-off, and message bubbles
// that grow token by token. Text goes in with textContent, never as HTML.
(function () {
  "use strict";

  // Open url() (asked again before each attempt: the URL may change) and keep it open: after a
  // close, retry in 0.5 s, 1 s, 2 s ... at most 10 s apart. `on` may hold connecting(),
  // open(), frame(frame) and closed(event, opened) (opened: the socket had opened).
  function liveSocket(url, on) {
    let socket = null;
    let retry = 0;
    const call = (name, ...args) => { if (on[name]) on[name](...args); };
    function connect() {
      let opened = false;
      socket = new WebSocket(url());
      call("connecting");
      socket.onopen = () => { opened = true; retry = 0; call("open"); };
      socket.onmessage = (event) => {
        try { call("frame", JSON.parse(event.data)); } catch (err) { console.error(err); }
      };
      socket.onclose = (event) => {
        call("closed", event, opened);
        setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
      };
    }
    connect();
    const isOpen = () => socket !== null && socket.readyState === WebSocket.OPEN;
    return {
      isOpen,
      // False (nothing sent) while the socket is not open.
      send(frame) {
        if (!isOpen()) return false;
        socket.send(JSON.stringify(frame));
        return true;
      },
    };
  }

  // The bubble of message `id` in `list`; make() builds it (appended) the first time.
  function bubbleFor(list, id, make) {
    let bubble = id ? list.querySelector(`[data-message-id="${CSS.escape(id)}"]`) : null;
    if (!bubble) {
      bubble = make();
      if (id) bubble.dataset.messageId = id;
      list.append(bubble);
    }
    return bubble;
  }

  // A streamed token: added to the bubble's text, the bubble marked as still streaming.
  function tokenAppend(bubble, textEl, text) {
    bubble.classList.add("streaming");
    textEl.textContent += text;
  }

  // The stored message: its whole text replaces the streamed pieces.
  function bubbleFinish(bubble, textEl, text) {
    bubble.classList.remove("streaming");
    textEl.textContent = text;
  }

  window.ShopBotLive = { liveSocket, bubbleFor, tokenAppend, bubbleFinish };
})();
