"""The multi-host proof (`make test-cluster`): real processes on network-namespace hosts.

data (PostgreSQL + Redis) · model (manage.py model_server: llama-server, the real model)
web-1, web-2 (daphne) · worker (Celery worker and trainer; registers and promotes versions)
client (the customer's and the agent's sockets, tests/cluster/client.py)

Hosts share only the artifact-store directory and the base model folder; everything else
goes over the lab network. The "retrain" promoted on the trainer host is a prepared LoRA
adapter registered and promoted through the real registry (a real retrain takes many minutes
on 2 cores). Replies are short (24 tokens). Prints the promotion-to-first-reply figures.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.cluster.lab import Lab, http_wait, lab_available

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

WEB_COMMAND = (
    "python manage.py replies_settle --older-than 30 && "
    "exec python -m daphne -b {address} -p 8000 chatbot.asgi:application"
)
AGENT = ("agent", "cluster-test-password-1")


@pytest.fixture(scope="module")
def prepared(real_model_dir, tmp_path_factory):
    """The base model's GGUF (made once, like the image's build step) and a fine-tuned
    adapter standing in for a retrain."""
    from chatbot.serving.model_server import gguf_ensure, llama_cpp_dir
    from chatbot.serving.versions import ServingTarget
    from tests.chatbot.test_model_server import adapter_make

    if why := lab_available():
        pytest.skip(why)
    if not os.environ.get("CHATBOT_CLUSTER_TEST"):
        pytest.skip("run by `make test-cluster` (CHATBOT_CLUSTER_TEST=1)")
    base = ServingTarget(1, 1, str(real_model_dir), str(real_model_dir))
    return {
        "llama_server": str(llama_cpp_dir() / "bin" / "llama-server"),
        "base_gguf": gguf_ensure(base),
        "adapter": adapter_make(real_model_dir, tmp_path_factory.mktemp("prepared") / "v2"),
        "base": real_model_dir,
    }


def web_url(lab: Lab, name: str) -> str:
    return f"http://{lab.hosts[name].address}:8000"


def client_step(lab: Lab, step: str, **arguments) -> dict:
    output = lab.run(
        lab.hosts["client"],
        [sys.executable, "-m", "tests.cluster.client", step, json.dumps(arguments)],
        timeout=240,
    )
    result = json.loads(output.strip().splitlines()[-1])
    print(f"{step}: {result}")
    return result


def model_host_start(lab: Lab, prepared: dict) -> None:
    model = lab.hosts["model"]
    gguf_dir = model.data_dir / "models" / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    target = gguf_dir / prepared["base_gguf"].name
    if not target.exists():
        os.link(prepared["base_gguf"], target)  # in the image: converted at build
    url = f"http://{model.address}:8081"
    lab.start(model, "model", [sys.executable, "manage.py", "model_server", "--url", url])


@pytest.fixture(scope="module")
def cluster(prepared):
    lab = Lab().open()
    try:
        data = lab.host("data", 2)
        for name, number in (("model", 10), ("web1", 21), ("web2", 22), ("worker", 30)):
            lab.host(name, number)
        lab.host("client", 100)
        lab.env = {
            "DATABASE_URL": f"postgres://postgres@{data.address}:5432/chatbot",
            "REDIS_URL": f"redis://{data.address}:6379/0",
            "DJANGO_SECRET_KEY": "cluster-lab-" + "k7Q2x9Lm" * 8,  # shared, as in production
            "DJANGO_ALLOWED_HOSTS": ",".join(lab.hosts[n].address for n in ("web1", "web2")),
            "ARTIFACT_STORE_DIR": str(lab.tmp / "store"),
            "CHAT_BASE_MODEL_PATH": str(prepared["base"]),
            "LLAMA_SERVER_BIN": prepared["llama_server"],
            "MODEL_SERVER_DISCOVER": "1",
            "MODEL_SERVER_HEARTBEAT_SECONDS": "1",
            "MODEL_SERVER_THREADS": "1",
            "MODEL_SERVER_SLOTS": "4",
            "MODEL_SERVER_KV_TOKENS": "4096",
            "SERVING_MAX_NEW_TOKENS": "24",
            "SERVING_WARMUP": "1",
            "KNOWLEDGE_RETRIEVAL": "0",
            "APPROVED_ANSWERS": "0",
            "CHAT_REPLY_LEASE_SECONDS": "4",
            "CHAT_SESSION_RATE_LIMIT_MESSAGES": "0",
            "CHAT_IP_RATE_LIMIT_MESSAGES": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        }
        started = time.monotonic()
        lab.data_start(data)
        worker = lab.hosts["worker"]
        lab.manage(worker, "migrate", "--noinput")
        lab.manage(
            worker,
            "createsuperuser",
            "--noinput",
            "--username",
            AGENT[0],
            "--email",
            "agent@example.com",
            env={"DJANGO_SUPERUSER_PASSWORD": AGENT[1]},
        )
        model_host_start(lab, prepared)
        for name in ("web1", "web2"):
            command = WEB_COMMAND.format(address=lab.hosts[name].address)
            lab.start(lab.hosts[name], "web", ["bash", "-c", command])
        lab.start(
            worker,
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "chatbot",
                "worker",
                "--concurrency=1",
                "--queues=celery,training",
                "--prefetch-multiplier=1",
                "--loglevel=INFO",
            ],
        )
        for name in ("web1", "web2"):
            http_wait(lab, lab.hosts["client"], web_url(lab, name) + "/")
        print(f"cluster up in {time.monotonic() - started:.1f} s")
        yield lab
    finally:
        lab.close()


def test_the_shop_runs_on_several_hosts(cluster, prepared):
    lab = cluster
    web1, web2 = web_url(lab, "web1"), web_url(lab, "web2")
    worker = lab.hosts["worker"]
    # The trainer prepares v2 (its GGUF, the artifact store) while the customers chat.
    adapter = str(prepared["adapter"])
    registering = lab.start(
        worker,
        "register",
        [sys.executable, "manage.py", "register_version", adapter, "--by", "trainer"],
    )

    # 1. A customer on web-1 and an agent on web-2 see the same conversation live.
    seen = client_step(lab, "live", web1=web1, web2=web2, username=AGENT[0], password=AGENT[1])
    assert seen["agent"] == "hello" and seen["snapshot_messages"] >= 2
    assert seen["first_reply"] == "bot_message" and seen["reply"] == "bot_message"
    assert seen["customer_tokens"] >= 2 and len(seen["agent_tokens"]) >= 2
    assert "".join(seen["agent_tokens"]) == seen["agent_reply_text"] == seen["customer_reply_text"]
    assert seen["model_version"] == 1

    # 2. A version promoted on the trainer host is what both web hosts serve next.
    assert registering.wait(timeout=240) == 0, (worker.data_dir / "register.log").read_text()
    lab.manage(worker, "promote", "2", "--by", "trainer", "--reason", "cluster test")
    promoted_at = time.time()
    served = client_step(lab, "versions", webs=[web1, web2], want=2, promoted_at=promoted_at)
    for web in (web1, web2):
        assert served[web]["seconds"] is not None, served
        assert served[web]["seconds"] < 30, served
    cached = list((lab.hosts["model"].data_dir / "artifact-cache").iterdir())
    assert cached, "the model host fetched v2 from the artifact store"

    # 3. web-1 dies mid-conversation: the customer carries on on web-2.
    web1_proc = lab.hosts["web1"].procs["web"]
    moved = client_step(lab, "web_killed", web1=web1, web2=web2, web1_pgid=web1_proc.pid)
    web1_proc.wait(timeout=20)
    lab.hosts["web1"].procs.pop("web")
    assert moved["killed_mid_reply"], moved
    assert moved["in_flight"] in ("stored", "marked failed"), moved
    assert moved["continued"] == "bot_message", moved

    # 4. The model server dies mid-reply: an error frame (or a whole reply), never silence.
    model = lab.hosts["model"]
    listed = subprocess.run(["ip", "netns", "pids", model.netns], capture_output=True, text=True)
    pids = [int(p) for p in listed.stdout.split()]
    ended = client_step(lab, "model_killed", web=web2, model_pids=pids)
    model.procs.pop("model").wait(timeout=20)
    assert ended["killed_mid_reply"], ended
    assert ended["end"] in ("error", "bot_message"), ended
    if ended["end"] == "error":
        assert ended["code"] == "generation_failed", ended
    # Restarted (as its service manager would), the host serves the active version again.
    model_host_start(lab, prepared)
    back = client_step(lab, "versions", webs=[web2], want=2, promoted_at=time.time(), timeout=120)
    assert back[web2]["seconds"] is not None, back
