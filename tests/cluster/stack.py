"""The chatbot on lab hosts (tests/cluster/lab.py): used by `make test-cluster` and by
benchmarks/bench_cluster.py.

data 10.231.0.2 (PostgreSQL, Redis) · model-N 10.231.0.1N (manage.py model_server)
web1/web2 10.231.0.21/22 (daphne) · worker 10.231.0.30 (Celery; the trainer) · client .100
"""

import json
import os
import sys
import time
from pathlib import Path

from tests.cluster.lab import Lab, http_wait

WEB_COMMAND = (
    "python manage.py replies_settle --older-than 30 && "
    "exec python -m daphne -b {address} -p 8000 chatbot.asgi:application"
)
AGENT = ("agent", "cluster-test-password-1")


def prepared_files(real_model_dir: Path, tmp: Path) -> dict:
    """What every host's image would hold: llama-server, the base model and its GGUF
    (converted once, like an image build), plus a fine-tuned adapter standing in for a
    retrain (tests/chatbot/test_model_server.adapter_make)."""
    from chatbot.serving.model_server import gguf_ensure, llama_cpp_dir
    from chatbot.serving.versions import ServingTarget
    from tests.chatbot.test_model_server import adapter_make

    base = ServingTarget(1, 1, str(real_model_dir), str(real_model_dir))
    return {
        "llama_server": str(llama_cpp_dir() / "bin" / "llama-server"),
        "base_gguf": gguf_ensure(base),
        "adapter": adapter_make(real_model_dir, tmp / "v2"),
        "base": real_model_dir,
    }


def web_url(lab: Lab, name: str) -> str:
    return f"http://{lab.hosts[name].address}:8000"


def client_step(lab: Lab, step: str, timeout: float = 300, **arguments) -> dict:
    """Run a tests/cluster/client.py step on the client host; its JSON result."""
    output = lab.run(
        lab.hosts["client"],
        [sys.executable, "-m", "tests.cluster.client", step, json.dumps(arguments)],
        timeout=timeout,
    )
    return json.loads(output.strip().splitlines()[-1])


def model_host_start(lab: Lab, name: str, prepared: dict) -> None:
    host = lab.hosts[name]
    gguf_dir = host.data_dir / "models" / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    image_copy = gguf_dir / prepared["base_gguf"].name
    if not image_copy.exists():
        os.link(prepared["base_gguf"], image_copy)  # in the image: converted at build
    url = f"http://{host.address}:8081"
    lab.start(host, "model", [sys.executable, "manage.py", "model_server", "--url", url])


def announced_models(lab: Lab) -> list[dict]:
    """The model servers announced in the lab's Redis (read from the worker host)."""
    script = (
        "import django, json; django.setup(); "
        "from chatbot.serving.cluster import redis_client, servers_announced; "
        "print(json.dumps([s.__dict__ for s in servers_announced(redis_client())]))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "chatbot.settings"}
    out = lab.run(lab.hosts["worker"], [sys.executable, "-c", script], env=env)
    return json.loads(out.strip().splitlines()[-1])


def models_wait(lab: Lab, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([s for s in announced_models(lab) if s["versions"]]) >= count:
            return
        time.sleep(1.0)
    raise RuntimeError(f"{count} model servers did not announce a version in {timeout:g} s")


def stack_open(prepared: dict, *, model_hosts: int = 1, env: dict | None = None) -> Lab:
    """Start the whole stack on fresh lab hosts; closes the lab if anything fails."""
    lab = Lab().open()
    try:
        data = lab.host("data", 2)
        for i in range(model_hosts):
            lab.host(f"model{i + 1}", 11 + i)
        for name, number in (("web1", 21), ("web2", 22), ("worker", 30), ("client", 100)):
            lab.host(name, number)
        lab.env = {
            "DATABASE_URL": f"postgres://postgres@{data.address}:5432/chatbot",
            "REDIS_URL": f"redis://{data.address}:6379/0",
            "DJANGO_SECRET_KEY": "cluster-lab-" + "k7Q2x9Lm" * 8,  # shared, as in production
            "DJANGO_ALLOWED_HOSTS": ",".join(lab.hosts[n].address for n in ("web1", "web2")),
            "ARTIFACT_STORE_DIR": str(lab.tmp / "store"),
            "CHAT_BASE_MODEL_PATH": str(prepared["base"]),
            "LLAMA_SERVER_BIN": prepared["llama_server"],
            "MODEL_SERVER_DISCOVER": "1",
            "MODEL_SERVER_API_KEY": "cluster-lab-model-key-" + "q" * 16,
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
            **(env or {}),
        }
        lab.data_start(data)
        worker = lab.hosts["worker"]
        lab.manage(worker, "migrate", "--noinput")
        lab.manage(
            worker,
            *("createsuperuser", "--noinput", "--username", AGENT[0], "--email", "a@example.com"),
            env={"DJANGO_SUPERUSER_PASSWORD": AGENT[1]},
        )
        for i in range(model_hosts):
            model_host_start(lab, f"model{i + 1}", prepared)
        for name in ("web1", "web2"):
            command = WEB_COMMAND.format(address=lab.hosts[name].address)
            lab.start(lab.hosts[name], "web", ["bash", "-c", command])
        celery = [sys.executable, "-m", "celery", "-A", "chatbot", "worker", "--concurrency=1"]
        lab.start(worker, "worker", [*celery, "--queues=celery,training", "--loglevel=INFO"])
        for name in ("web1", "web2"):
            http_wait(lab, lab.hosts["client"], web_url(lab, name) + "/")
        models_wait(lab, model_hosts)
    except BaseException:
        lab.close()
        raise
    return lab
