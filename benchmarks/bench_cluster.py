"""Several hosts (README "Scaling out"): 1 vs 2 model servers, and promotion to first reply.

Runs the stack on network-namespace hosts (tests/cluster/stack.py; root) with the real
model. For each setup (one model server with 1 and with 2 llama.cpp threads, two model
servers with 1 thread each) it sends CHATS customers at once, spread over the two web hosts,
ROUNDS times, and reports aggregate tokens/s and TTFT p50. Then it promotes a prepared
fine-tuned version on the trainer host and reports, per web host, the seconds from the
promotion to the first token of its first reply from that version. Run:
  sudo .venv/bin/python benchmarks/bench_cluster.py   (about 8 minutes on 2 cores)
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHATS = int(os.environ.get("BENCH_CHATS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
TOKENS = os.environ.get("BENCH_TOKENS", "64")


def summary(load: dict) -> dict:
    replies = load["replies"]
    ttfts = [r["ttft"] for r in replies if r["ttft"] is not None]
    return {
        "replies_ok": sum(r["ok"] for r in replies),
        "replies": len(replies),
        "aggregate_tokens_per_s": round(sum(r["tokens"] for r in replies) / sum(load["walls"]), 1),
        "ttft_p50_s": round(statistics.median(ttfts), 2) if ttfts else None,
        "ttft_max_s": round(max(ttfts), 2) if ttfts else None,
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from django.conf import settings

    from chatbot.serving.default_model import default_model_convert
    from tests.cluster.stack import prepared_files

    base = default_model_convert(Path(settings.DEFAULT_MODEL_DIR))
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        run(prepared_files(base, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(prepared: dict) -> None:
    from tests.cluster.stack import client_step, stack_open, web_url

    results: dict = {"chats": CHATS, "rounds": ROUNDS, "max_new_tokens": TOKENS, "setups": {}}
    setups = [
        ("1 server, 1 thread", 1, "1"),
        ("1 server, 2 threads", 1, "2"),
        ("2 servers, 1 thread each", 2, "1"),
    ]
    for label, servers, threads in setups:
        env = {"MODEL_SERVER_THREADS": threads, "SERVING_MAX_NEW_TOKENS": TOKENS}
        lab = stack_open(prepared, model_hosts=servers, env=env)
        try:
            webs = [web_url(lab, "web1"), web_url(lab, "web2")]
            client_step(lab, "load", webs=webs, chats=2)  # warm-up: tokenizers, model load
            load = client_step(lab, "load", webs=webs, chats=CHATS, rounds=ROUNDS, timeout=600)
            results["setups"][label] = summary(load)
            print(label, results["setups"][label], flush=True)
            if servers == 2:
                worker = lab.hosts["worker"]
                lab.manage(worker, "register_version", str(prepared["adapter"]), timeout=600)
                lab.manage(worker, "promote", "2", "--by", "bench")
                promoted_at = time.time()
                served = client_step(lab, "versions", webs=webs, want=2, promoted_at=promoted_at)
                results["promotion_to_first_reply_s"] = {
                    name: served[url]["seconds"]
                    for name, url in zip(("web1", "web2"), webs, strict=True)
                }
                print("promotion", results["promotion_to_first_reply_s"], flush=True)
        finally:
            lab.close()
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
