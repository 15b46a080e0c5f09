"""The model server's decode while a torch job (a retrain, the trainer's paraphrases) shares
the host's cores, as on a one-machine `make run`.

For each llama-server thread count in BENCH_SERVER_THREADS (default "2"), each trainer CPU
class in BENCH_POLICIES (default "normal idle", training/priority.py), each OpenMP wait
policy of the torch job in BENCH_WAITS (default "default PASSIVE": libgomp's spin-then-sleep,
and a Celery worker's, chatbot/celery.py) and each torch contender in BENCH_CONTENDERS
(default "none 1 2": no contender, then a matrix-multiply loop with that many torch threads),
it prints the median decode tokens/s of 3 single-chat replies (retrieval-length prompt, up to
128 tokens, raw `/completion`), or "stalled" when a reply did not finish within 60 s.
The trainer as it runs: idle class, PASSIVE.

    python benchmarks/bench_contention.py

About 8 minutes on 2 cores.
"""

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTENDER = (
    "import sys, torch\n"
    "sys.path.insert(0, sys.argv[3])\n"
    "from training.priority import background_priority\n"
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "a = torch.randn(768, 768)\n"
    "a = torch.tanh(a @ a)\n"  # torch's threads exist before, as in a trainer that ran a task
    "background_priority(sys.argv[2])\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


# A reply that has not finished its 128 tokens by then counts as stalled.
RUN_SECONDS = 60


async def _bounded(reply) -> float:
    """The reply's decode tokens/s, or 0.0 when it did not finish within RUN_SECONDS."""
    try:
        return (await asyncio.wait_for(reply, RUN_SECONDS))["decode"]
    except TimeoutError:
        return 0.0


def contender_start(threads: int, policy: str, wait: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if wait != "default":
        env["OMP_WAIT_POLICY"] = wait
    return subprocess.Popen(
        [sys.executable, "-c", CONTENDER, str(threads), policy, str(ROOT)], env=env
    )


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from django.test import override_settings

    from benchmarks.bench_model_server import free_port, raw_once, retrieval_messages
    from chatbot.serving.engine import GenerationParams
    from chatbot.serving.model_server import model_link, server_spawn
    from chatbot.serving.remote import prompt_ids
    from chatbot.serving.versions import ServingTarget, base_model_path

    base = str(base_model_path())
    target = ServingTarget(version_id=1, version_number=1, artifact_path=base, base_path=base)
    messages = retrieval_messages("Can I return a jacket I bought three weeks ago?")
    server_threads = [int(t) for t in os.environ.get("BENCH_SERVER_THREADS", "2").split()]
    contenders = os.environ.get("BENCH_CONTENDERS", "none 1 2").split()
    policies = os.environ.get("BENCH_POLICIES", "normal idle").split()
    waits = os.environ.get("BENCH_WAITS", "default PASSIVE").split()
    loaded = [c for c in contenders if c != "none"]
    cases = [("none", "-", "-")] + [
        (c, policy, wait) for policy in policies for wait in waits for c in loaded
    ]
    print(
        f"{'server threads':>14s} {'torch contender':>16s} {'CPU class':>10s}"
        f" {'OMP wait':>9s} {'decode tokens/s':>16s}"
    )
    for threads in server_threads:
        models = Path(tempfile.mkdtemp(prefix="bench-contention-"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with override_settings(MODEL_SERVER_MODELS_DIR=models, MODEL_SERVER_THREADS=threads):
            model_link(target)
            proc = server_spawn(port=port, log_path=models / "server.log")
            try:
                ids = prompt_ids(messages, target, GenerationParams())
                asyncio.run(raw_once(url, ids, "v1"))  # loads the model
                for contender, policy, wait in cases:
                    if contender == "none" and "none" not in contenders:
                        continue
                    other = (
                        None
                        if contender == "none"
                        else contender_start(int(contender), policy, wait)
                    )
                    try:
                        rates = []
                        for _ in range(3):
                            rates.append(asyncio.run(_bounded(raw_once(url, ids, "v1"))))
                            if not rates[-1]:
                                break  # stalled: one is enough
                    finally:
                        if other:
                            other.kill()
                            other.wait()
                    label = "none" if contender == "none" else f"{contender} thread(s)"
                    shown = (
                        f"{statistics.median(rates):16.1f}"
                        if all(rates)
                        else f"{'stalled (<' + format(128 / RUN_SECONDS, '.1f') + ')':>16s}"
                    )
                    print(
                        f"{threads:14d} {label:>16s} {policy:>10s} {wait:>9s} {shown}", flush=True
                    )
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)


if __name__ == "__main__":
    main()
