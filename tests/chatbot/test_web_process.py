"""A web process that streams replies from model servers keeps torch to WEB_TORCH_THREADS
(it only embeds questions there); one with the model in process keeps every core."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "import chatbot.asgi, torch; print(torch.get_num_threads())"


def web_process_threads(**env: str) -> int:
    environ = {**os.environ, "SERVING_WARMUP": "0", "OMP_NUM_THREADS": "2", **env}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "threads"),
    [
        ({"MODEL_SERVER_URL": "http://127.0.0.1:9"}, 1),
        ({"MODEL_SERVER_URL": "http://127.0.0.1:9", "WEB_TORCH_THREADS": "0"}, 2),
        ({"MODEL_SERVER_URL": ""}, 2),
    ],
)
def test_torch_threads_of_the_web_process(env, threads):
    assert web_process_threads(**env) == threads
