"""The trainer's CPU class (training/priority.py), in a child process so this one keeps its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.priority import background_priority

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
from training.priority import background_priority

go, stop = threading.Event(), threading.Event()
def wait():
    go.set()
    stop.wait()
before = threading.Thread(target=wait)
before.start()
go.wait()
changed = background_priority(sys.argv[2])
after = threading.Thread(target=stop.wait)
after.start()
classes = {t: os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}
stop.set()
print(json.dumps({"changed": changed, "classes": sorted(set(classes.values())),
                  "threads": len(classes)}))
"""


def child(policy: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), policy],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="scheduler classes are Linux's")
def test_idle_moves_every_thread_and_the_threads_started_later():
    seen = child("idle")
    assert seen["changed"] is True
    assert seen["threads"] == 3  # the main thread, one started before, one after
    assert seen["classes"] == [os.SCHED_IDLE]


@pytest.mark.skipif(sys.platform != "linux", reason="scheduler classes are Linux's")
def test_normal_leaves_the_process_alone():
    seen = child("normal")
    assert seen["changed"] is False
    assert seen["classes"] == [os.SCHED_OTHER]


def test_an_unknown_policy_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown CPU policy 'lowest'"):
        background_priority("lowest")


def test_a_celery_worker_makes_torch_threads_sleep_while_they_wait():
    """celeryd_init (sent as a worker starts, before any task loads torch) sets libgomp's
    passive wait policy: a spinning torch job beside the model server stalls its replies."""
    script = (
        "import os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatbot.settings')\n"
        "from celery.signals import celeryd_init\n"
        "import chatbot\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
        "celeryd_init.send(sender='worker@test', instance=None, conf=None, options={})\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    assert out.stdout.split("\n")[:2] == ["None False", "PASSIVE False"]
