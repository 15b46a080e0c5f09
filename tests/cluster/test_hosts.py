"""The multi-host proof (`make test-cluster`): real processes on network-namespace hosts
(tests/cluster/stack.py): data, one model server, web-1, web-2, worker+trainer, client.

Hosts share only the artifact-store directory and the base model folder; everything else
goes over the lab network. The "retrain" promoted on the trainer host is a prepared LoRA
adapter registered and promoted through the real registry (a real retrain takes many minutes
on 2 cores). Replies are short (24 tokens). Prints what each step saw, with timings.
"""

import os
import subprocess
import sys
import time

import pytest

from tests.cluster.lab import lab_available
from tests.cluster.stack import (
    AGENT,
    client_step,
    model_host_start,
    prepared_files,
    stack_open,
    web_url,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def prepared(real_model_dir, tmp_path_factory):
    if why := lab_available():
        pytest.skip(why)
    if not os.environ.get("CHATBOT_CLUSTER_TEST"):
        pytest.skip("run by `make test-cluster` (CHATBOT_CLUSTER_TEST=1)")
    return prepared_files(real_model_dir, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def cluster(prepared):
    started = time.monotonic()
    lab = stack_open(prepared)
    print(f"\ncluster up in {time.monotonic() - started:.1f} s")
    yield lab
    lab.close()


def step(lab, name: str, **arguments) -> dict:
    result = client_step(lab, name, **arguments)
    print(f"{name}: {result}")
    return result


def test_the_shop_runs_on_several_hosts(cluster, prepared):
    lab = cluster
    web1, web2 = web_url(lab, "web1"), web_url(lab, "web2")
    worker, model = lab.hosts["worker"], lab.hosts["model1"]
    # The trainer prepares v2 (its GGUF, the artifact store) while the customers chat.
    register = [sys.executable, "manage.py", "register_version", str(prepared["adapter"])]
    registering = lab.start(worker, "register", [*register, "--by", "trainer"])

    # 1. A customer on web-1 and an agent on web-2 see the same conversation live.
    seen = step(lab, "live", web1=web1, web2=web2, username=AGENT[0], password=AGENT[1])
    assert seen["agent"] == "hello" and seen["snapshot_messages"] >= 2
    assert seen["first_reply"] == "bot_message" and seen["reply"] == "bot_message"
    assert seen["customer_tokens"] >= 2 and len(seen["agent_tokens"]) >= 2
    assert "".join(seen["agent_tokens"]) == seen["agent_reply_text"] == seen["customer_reply_text"]
    assert seen["model_version"] == 1

    # 2. A version promoted on the trainer host is what both web hosts serve next.
    assert registering.wait(timeout=300) == 0, (worker.data_dir / "register.log").read_text()
    lab.manage(worker, "promote", "2", "--by", "trainer", "--reason", "cluster test")
    promoted_at = time.time()
    served = step(lab, "versions", webs=[web1, web2], want=2, promoted_at=promoted_at)
    for web in (web1, web2):
        assert served[web]["seconds"] is not None and served[web]["seconds"] < 30, served
    assert list((model.data_dir / "artifact-cache").iterdir()), "v2 came from the store"

    # 3. web-1 dies mid-conversation: the customer carries on on web-2.
    web1_proc = lab.hosts["web1"].procs.pop("web")
    moved = step(lab, "web_killed", web1=web1, web2=web2, web1_pgid=web1_proc.pid)
    web1_proc.wait(timeout=20)
    assert moved["killed_mid_reply"], moved
    assert moved["in_flight"] in ("stored", "marked failed"), moved
    assert moved["continued"] == "bot_message", moved

    # 4. The model server dies mid-reply: an error frame (or a whole reply), never silence.
    listed = subprocess.run(["ip", "netns", "pids", model.netns], capture_output=True, text=True)
    ended = step(lab, "model_killed", web=web2, model_pids=[int(p) for p in listed.stdout.split()])
    model.procs.pop("model").wait(timeout=20)
    assert ended["killed_mid_reply"], ended
    assert ended["end"] in ("error", "bot_message"), ended
    if ended["end"] == "error":
        assert ended["code"] == "generation_failed", ended
    # Restarted (as its service manager would), the host serves the active version again.
    model_host_start(lab, "model1", prepared)
    back = step(lab, "versions", webs=[web2], want=2, promoted_at=time.time(), timeout=120)
    assert back[web2]["seconds"] is not None, back
