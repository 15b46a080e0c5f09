"""The people in the multi-host test, run inside the lab's client namespace.

`python -m tests.cluster.client <step> '<json arguments>'` prints one JSON line: what the
customer and the agent saw. Each step is a plain async function; the test (outside the
namespaces) checks the results. Processes are killed by process group id, which works
across network namespaces.
"""

import asyncio
import json
import os
import re
import signal
import sys
import time

import httpx
import websockets

FRAME_WAIT = 90.0


def session_cookie(base: str) -> str:
    response = httpx.get(base + "/", timeout=30)
    return f"sessionid={response.cookies['sessionid']}"


def agent_login(base: str, username: str, password: str) -> str:
    """Log in through the admin login form; the session cookie."""
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the login page"
        client.post(
            "/admin/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token.group(1),
                "next": "/admin/",
            },
            headers={"Referer": base + "/admin/login/"},
        )
        return f"sessionid={client.cookies['sessionid']}"


def ws_url(base: str, path: str) -> str:
    return base.replace("http", "ws", 1) + path


async def connect(base: str, path: str, cookie: str):
    headers = {"Cookie": cookie, "Origin": base}
    return await websockets.connect(ws_url(base, path), additional_headers=headers, max_size=None)


async def frame(ws, wait: float = FRAME_WAIT) -> dict:
    received = json.loads(await asyncio.wait_for(ws.recv(), wait))
    received["_at"] = time.time()
    return received


async def until(ws, kinds: set[str], wait: float = FRAME_WAIT) -> list[dict]:
    """Frames up to and including the first whose type is in `kinds`."""
    seen = []
    while True:
        seen.append(await frame(ws, wait))
        if seen[-1]["type"] in kinds:
            return seen


async def ask(ws, text: str) -> list[dict]:
    await ws.send(json.dumps({"type": "customer_message", "text": text}))
    return await until(ws, {"bot_message", "error"})


async def live(web1: str, web2: str, username: str, password: str) -> dict:
    """A customer on web-1 and an agent on web-2 follow the same conversation, tokens too."""
    agent_cookie = await asyncio.to_thread(agent_login, web2, username, password)
    agent = await connect(web2, "/ws/agent/", agent_cookie)
    hello = await frame(agent)
    customer = await connect(web1, "/ws/chat/", await asyncio.to_thread(session_cookie, web1))
    await frame(customer)  # history
    first = await ask(customer, "Hello! How long does shipping take?")
    conversation_id = next(f["conversation_id"] for f in first if f["type"] == "conversation")
    await agent.send(json.dumps({"type": "watch", "conversation_id": conversation_id}))
    snapshot = (await until(agent, {"snapshot"}))[-1]

    async def agent_sees() -> list[dict]:
        frames = []
        while True:
            f = await frame(agent)
            if f.get("conversation_id", conversation_id) == conversation_id:
                frames.append(f)
            if f["type"] == "bot_message" and f["conversation_id"] == conversation_id:
                return frames

    watching = asyncio.create_task(agent_sees())
    second = await ask(customer, "And can I return a jacket?")
    agent_frames = await asyncio.wait_for(watching, FRAME_WAIT)
    await customer.close()
    await agent.close()
    reply = second[-1]
    return {
        "agent": hello["type"],
        "snapshot_messages": len(snapshot["messages"]),
        "first_reply": first[-1]["type"],
        "reply": reply["type"],
        "customer_tokens": sum(f["type"] == "token" for f in second),
        "agent_tokens": [f["text"] for f in agent_frames if f["type"] == "token"],
        "agent_reply_text": agent_frames[-1]["text"],
        "customer_reply_text": reply.get("text"),
        "model_version": reply.get("model_version"),
    }


async def versions(webs: list[str], want: int, promoted_at: float, timeout: float = 90) -> dict:
    """Per web host: seconds from the promotion to the first token of its first reply from
    version `want` (each host asks again until it gets one)."""

    async def one(base: str) -> dict:
        cookie = await asyncio.to_thread(session_cookie, base)
        replies = 0
        while time.time() - promoted_at < timeout:
            ws = await connect(base, "/ws/chat/", cookie)
            await frame(ws)
            frames = await ask(ws, f"What is your returns policy? ({replies})")
            await ws.close()
            replies += 1
            end = frames[-1]
            if end["type"] == "bot_message" and end["model_version"] == want:
                first = next((f["_at"] for f in frames if f["type"] == "token"), end["_at"])
                return {"seconds": round(first - promoted_at, 2), "replies": replies}
        return {"seconds": None, "replies": replies}

    results = await asyncio.gather(*(one(base) for base in webs))
    return dict(zip(webs, results, strict=True))


async def web_killed(web1: str, web2: str, web1_pgid: int) -> dict:
    """web-1 dies mid-reply; the customer reconnects to web-2 and carries on."""
    cookie = await asyncio.to_thread(session_cookie, web1)
    ws = await connect(web1, "/ws/chat/", cookie)
    await frame(ws)
    await ws.send(json.dumps({"type": "customer_message", "text": "Where is my parcel?"}))
    seen = await until(ws, {"token", "bot_message", "error"})
    conversation_id = next(f["conversation_id"] for f in seen if f["type"] == "conversation")
    killed_at = time.time()
    os.killpg(web1_pgid, signal.SIGKILL)
    mid_reply = seen[-1]["type"] == "token"
    outcome, history = None, {}
    while time.time() - killed_at < 60 and outcome is None:
        await asyncio.sleep(1.0)
        try:
            again = await connect(web2, f"/ws/chat/?conversation={conversation_id}", cookie)
        except OSError:
            continue
        history = await frame(again)
        await again.close()
        last = history["messages"][-1]
        if last["role"] == "bot":
            outcome = "stored"
        elif last.get("reply_failed"):
            outcome = "marked failed"
    again = await connect(web2, f"/ws/chat/?conversation={conversation_id}", cookie)
    await frame(again)
    carried_on = await ask(again, "Thanks. Can I change the delivery address?")
    await again.close()
    return {
        "killed_mid_reply": mid_reply,
        "in_flight": outcome,
        "settled_after": round(time.time() - killed_at, 1),
        "history_messages": len(history.get("messages", [])),
        "continued": carried_on[-1]["type"],
    }


async def model_killed(web: str, model_pids: list[int]) -> dict:
    """The model-server host dies mid-reply (every process on it): the customer gets an
    error frame or a whole reply, never silence."""
    cookie = await asyncio.to_thread(session_cookie, web)
    ws = await connect(web, "/ws/chat/", cookie)
    await frame(ws)
    await ws.send(json.dumps({"type": "customer_message", "text": "How do refunds work?"}))
    seen = await until(ws, {"token", "bot_message", "error"})
    for pid in model_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    started = time.time()
    try:
        rest = await until(ws, {"bot_message", "error"}, wait=120)
        end = rest[-1]
    except TimeoutError:
        end = {"type": "silence"}
    await ws.close()
    return {
        "killed_mid_reply": seen[-1]["type"] == "token",
        "end": end["type"],
        "code": end.get("code"),
        "seconds": round(time.time() - started, 1),
    }


async def load(webs: list[str], chats: int, rounds: int = 1) -> dict:
    """`chats` customers at once, spread over the web hosts, `rounds` times: every reply's
    time to first token and tokens, and the wall time of each round."""
    questions = [
        "How long does shipping take?",
        "Can I return a jacket I bought three weeks ago?",
        "How do I get a refund?",
        "Can I change the delivery address of my order?",
        "Which payment methods do you accept?",
        "My item arrived damaged. What now?",
        "How do I cancel an order?",
        "Do you ship internationally?",
    ]
    cookies = [await asyncio.to_thread(session_cookie, webs[i % len(webs)]) for i in range(chats)]

    async def one(i: int, round_: int) -> dict:
        base = webs[i % len(webs)]
        ws = await connect(base, "/ws/chat/", cookies[i])
        await frame(ws)
        sent = time.time()
        frames = await ask(ws, f"{questions[(i + round_) % len(questions)]} ({round_})")
        await ws.close()
        end = frames[-1]
        first = next((f["_at"] for f in frames if f["type"] == "token"), None)
        return {
            "ok": end["type"] == "bot_message",
            "ttft": None if first is None else first - sent,
            "tokens": end.get("token_count") or 0,
        }

    replies, walls = [], []
    for round_ in range(rounds):
        start = time.time()
        replies += await asyncio.gather(*(one(i, round_) for i in range(chats)))
        walls.append(time.time() - start)
    return {"replies": replies, "walls": walls}


STEPS = {
    "load": load,
    "live": live,
    "versions": versions,
    "web_killed": web_killed,
    "model_killed": model_killed,
}

if __name__ == "__main__":
    step, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(STEPS[step](**arguments))))
