"""The learning loop measured as a shop lives it: customers ask, agents correct, the bot
answers the next customers from memory at once, a retrain makes the model learn it.

Run with `make bench-loop` (real SmolLM2-135M, a throwaway SQLite database and data folder,
the seed corpus shipped in training/seed_data, default settings except the shop's name and
policies and retrieval off to isolate memory and model). Replies come from the model server
(llama-server, each version as the GGUF the retrain publishes) as after `make run`;
`--in-process` generates them in the web process instead. The scenario is
benchmarks/loop_scenario.py: 3 topics, agents correct `--per-topic` replies on each; 8
held-out paraphrases per topic and 10 questions on other subjects are asked only here.

Phases, each through the chat socket like a browser:
  before   base model, empty memory
  memory   right after the corrections (approved-answer memory, base model): (a)
  retrain  `manage.py retrain --inline` (data, train, evaluate, gate); stage times
  model    the retrained model alone (APPROVED_ANSWERS=0): (b)
  both     retrained model and memory: (c)
Prints, per phase, the share of held-out paraphrases whose reply states the corrected facts,
approved answers given to unrelated questions, raw {{slot}} counts, and the gate's metrics.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_chat import app_wait, free_port, health_wait, manage, session_cookie  # noqa: E402
from loop_scenario import CONTROL, SHOP_NAME, SHOP_POLICIES, TOPICS  # noqa: E402

SLOT = re.compile(r"\{\{[^}]*\}\}")


def bench_env(data_dir: str, model_url: str) -> dict:
    """The app's settings for the bench: defaults, except those named here. `model_url`: the
    model server's address (empty: the in-process engine)."""
    env = {
        **os.environ,
        "DATA_DIR": data_dir,
        "MODEL_SERVER_URL": model_url,
        "SHOP_NAME": SHOP_NAME,
        "SHOP_POLICIES": SHOP_POLICIES,
        "KNOWLEDGE_RETRIEVAL": "0",
        # Every benchmark customer comes from 127.0.0.1: the per-address limit (60 a minute)
        # would refuse the end of a phase (it did: 3 of 24 memory-phase questions went
        # unanswered before this was set).
        "CHAT_RATE_LIMIT_MESSAGES": "1000",
        "CHAT_SESSION_RATE_LIMIT_MESSAGES": "1000",
        "CHAT_IP_RATE_LIMIT_MESSAGES": "100000",
        "SERVING_WARMUP": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "chatbot.settings",
    }
    env.pop("DATABASE_URL", None)  # a throwaway SQLite database in DATA_DIR
    env.pop("REDIS_URL", None)
    return env


class Server:
    """daphne with the app and, unless in-process, the model server serving the active
    version, as `make run` starts them (model warmed up at start)."""

    def __init__(self, env: dict, **extra: str):
        env = {**env, **extra}
        self.model_server = None
        if env["MODEL_SERVER_URL"]:
            log = Path(env["DATA_DIR"]) / "bench-model-server.log"
            self.model_server = subprocess.Popen(
                [sys.executable, "manage.py", "model_server", "--url", env["MODEL_SERVER_URL"]],
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
            )
            health_wait(env["MODEL_SERVER_URL"] + "/health")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
            + ["--access-log", os.devnull, "chatbot.asgi:application"],
            cwd=ROOT,
            env=env,
        )
        app_wait(self.base)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if self.model_server:
            os.killpg(self.model_server.pid, signal.SIGTERM)
            self.model_server.wait(timeout=30)


async def ask(base: str, question: str) -> dict:
    """One new customer asks one question; the finished bot_message frame, timed."""
    cookie = await asyncio.to_thread(session_cookie, base)
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        await asyncio.wait_for(ws.recv(), 60)  # history
        await ws.send(json.dumps({"type": "customer_message", "text": question}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 300))
            if frame["type"] == "bot_message":
                frame["finished_at"] = time.time()
                return frame
            if frame["type"] in ("error", "status"):
                return {**frame, "text": "", "refused": frame, "finished_at": time.time()}


async def ask_all(base: str, questions: list[str], *, at_once: int = 4) -> list[dict]:
    gate = asyncio.Semaphore(at_once)

    async def one(question: str) -> dict:
        async with gate:
            return await ask(base, question)

    return await asyncio.gather(*(one(q) for q in questions))


def phase_measure(base: str) -> dict:
    """Ask every held-out paraphrase and control question once; score the replies."""
    held = [(topic, q) for topic in TOPICS for q in topic.held_out]
    replies = asyncio.run(ask_all(base, [q for _, q in held] + list(CONTROL)))
    held_replies, control_replies = replies[: len(held)], replies[len(held) :]
    per_topic = {}
    for topic in TOPICS:
        mine = [r for (t, _), r in zip(held, held_replies, strict=True) if t is topic]
        per_topic[topic.name] = sum(topic.states_facts(r["text"]) for r in mine) / len(mine)
    stated = sum(t.states_facts(r["text"]) for (t, _), r in zip(held, held_replies, strict=True))
    approved = [r for r in held_replies if r.get("reply_kind") == "approved"]
    return {
        "facts_stated": stated / len(held),
        "per_topic": per_topic,
        "answered_verbatim_from_memory": len(approved) / len(held),
        "memory_in_prompt": sum(
            1
            for r in held_replies
            if r.get("reply_kind") != "approved"
            and any(s.get("kind") == "approved" for s in r.get("sources", []))
        )
        / len(held),
        "facts_when_in_prompt": _share(
            [
                t.states_facts(r["text"])
                for (t, _), r in zip(held, held_replies, strict=True)
                if r.get("reply_kind") != "approved"
                and any(s.get("kind") == "approved" for s in r.get("sources", []))
            ]
        ),
        "control_given_approved_answer": sum(
            1
            for r in control_replies
            if any(s.get("kind") == "approved" for s in r.get("sources", []))
        )
        / len(CONTROL),
        "raw_slots": sum(len(SLOT.findall(r["text"])) for r in replies),
        # Questions answered with an error or status frame instead of a reply (counted as
        # not stating the facts): should be 0.
        "unanswered": [r["refused"] for r in replies if "refused" in r],
        "replies": [
            {"question": q, "topic": t.name, "kind": r.get("reply_kind"), "text": r["text"]}
            for (t, q), r in zip(held, held_replies, strict=True)
        ],
        "_finished": [r["finished_at"] for r in held_replies],
    }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def corrections_make(base: str, env: dict, per_topic: int) -> float:
    """Customers ask; an agent corrects every reply with the topic's policy (the console's
    service). Returns when the last correction was saved (epoch seconds)."""
    questions = [(topic, q) for topic in TOPICS for q in topic.asked[:per_topic]]
    replies = asyncio.run(ask_all(base, [q for _, q in questions]))
    corrections = [
        {"message_id": r["message_id"], "text": t.policy}
        for (t, _), r in zip(questions, replies, strict=True)
        if r.get("message_id")
    ]
    script = (
        "import json, sys, time\n"
        "from feedback.agents import agent_create\n"
        "from feedback import services\n"
        "from django.contrib.auth.models import User\n"
        "agent = User.objects.filter(username='alex').first() or agent_create("
        "username='alex', password='bench-pass-123', first_name='Alex')\n"
        "for c in json.loads(sys.stdin.read()):\n"
        "    services.correction_submit(message_id=c['message_id'], agent=agent, text=c['text'])\n"
        "print(time.time())\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        input=json.dumps(corrections),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    print(f"  {len(corrections)} replies corrected")
    return float(done.stdout.strip().splitlines()[-1])


def trainer_drain(env: dict, *, timeout: float = 1200) -> dict:
    """The Procfile's `trainer` worker, run until the tasks waiting on its queue are done
    (the paraphrases each saved correction queued for the next retrain), then stopped.
    Returns the task count and the worker's seconds."""
    queued = list((Path(env["DATA_DIR"]) / "celery-broker" / "out").glob("*training*"))
    if not queued:
        return {"tasks": 0, "seconds": 0.0}
    log_path = Path(env["DATA_DIR"]) / "bench-trainer.log"
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "chatbot", "worker", "--pool=solo"]
            + ["--queues=training", "--loglevel=INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        done = 0
        while time.perf_counter() - t0 < timeout and proc.poll() is None:
            text = log_path.read_text()
            done = len(re.findall(r"\] (?:succeeded|raised|failed)", text))
            if done >= len(queued):
                break
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"tasks": len(queued), "done": done, "seconds": round(time.perf_counter() - t0, 1)}


def retrain(env: dict, extra: dict) -> tuple[dict, float]:
    """`manage.py retrain --inline` (data, train, evaluate, gate in this order); the run's
    record and the wall time."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", "retrain", "--inline"],
        cwd=ROOT,
        env={**env, **extra},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    script = (
        "import json\n"
        "from training.models import TrainingRun\n"
        "run = TrainingRun.objects.order_by('-id').first()\n"
        "print(json.dumps({'status': run.status, 'outcome': run.outcome, 'error': run.error,\n"
        "                  'stages': run.stage_timings}, default=str))\n"
    )
    record = json.loads(manage(env, "shell", "-c", script).strip().splitlines()[-1])
    record["output_tail"] = (done.stdout + done.stderr)[-2000:]
    return record, seconds


def seed_at_reply_length(env: dict, *, limit: int) -> dict:
    """Seed held-out ROUGE-L and MiniLM similarity of every version at the reply length
    customers get (SERVING_MAX_NEW_TOKENS, 192), not the gate's 64 tokens: 91 % of the seed
    answers are longer than 64 tokens (median 153), so a 64-token reply caps its ROUGE-L
    recall. The first `limit` frozen seed cases of the newest snapshot, greedy, batched, on
    the engine the bench's replies come from."""
    script = (
        "import json\n"
        "from django.conf import settings\n"
        "from training.models import ModelVersion\n"
        "versions = [(v.number, v.artifact_path or 'base')\n"
        "            for v in ModelVersion.objects.order_by('number')]\n"
        "print(json.dumps({'tokens': settings.SERVING_MAX_NEW_TOKENS, 'versions': versions}))\n"
    )
    found = json.loads(manage(env, "shell", "-c", script).strip().splitlines()[-1])
    tokens, versions = str(found["tokens"]), found["versions"]
    out = Path(env["DATA_DIR"]) / "bench-reply-length.json"
    t0 = time.perf_counter()
    manage(
        env,
        "evaluate",
        *[path for _, path in versions],
        "--limit",
        str(limit),
        "--max-new-tokens",
        tokens,
        "--json",
        str(out),
        # As customers get them: each version's GGUF on llama-server, unless the bench
        # measures the in-process engine.
        *(["--served"] if env.get("MODEL_SERVER_URL") else []),
    )
    reports = json.loads(out.read_text())["reports"]
    result = {
        "max_new_tokens": int(tokens),
        "seconds": round(time.perf_counter() - t0, 1),
        "engine": reports[0]["engine"],
    }
    for (number, _), report in zip(versions, reports, strict=True):
        seed = [c for c in report["per_case"] if c.get("kind", "seed") == "seed"]
        result[f"v{number}"] = {
            "seed_cases": len(seed),
            "seed_rouge_l": round(sum(c["rouge_l"] for c in seed) / len(seed), 4),
            "seed_semantic_similarity": round(
                sum(c["semantic_similarity"] for c in seed) / len(seed), 4
            ),
        }
    return result


def versions_report(env: dict) -> dict:
    script = (
        "import json\n"
        "from training.models import ModelVersion\n"
        "out = {'versions': [{'number': v.number, 'status': v.status, 'metrics': v.metrics,\n"
        "                     'reason': v.status_reason} for v in ModelVersion.objects.all()]}\n"
        "print(json.dumps(out, default=str))\n"
    )
    return json.loads(manage(env, "shell", "-c", script).strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Learning-loop benchmark")
    parser.add_argument("--per-topic", type=int, default=7, help="corrected replies per topic")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    parser.add_argument(
        "--memory-only", action="store_true", help="stop after the memory phase (no retrain)"
    )
    parser.add_argument(
        "--seed-train-examples",
        type=int,
        default=400,
        help="rows of the first (full) fine-tune on the seed corpus; 0 = all (about an hour)",
    )
    parser.add_argument(
        "--data-dir",
        default="",
        help="use this data folder (default: a new temporary one); the state right after the "
        "corrections is kept beside it as DIR.after-corrections",
    )
    parser.add_argument(
        "--from-corrections",
        action="store_true",
        help="restore --data-dir from its kept DIR.after-corrections and start at the "
        "incremental retrain (to compare training settings on the same parent and corrections)",
    )
    parser.add_argument(
        "--retrain-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the incremental retrain, e.g. TRAINING_REPLAY_EXAMPLES=64",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="generate replies in the web process (MODEL_SERVER_URL empty) instead of the "
        "model server",
    )
    parser.add_argument(
        "--reply-length-cases",
        type=int,
        default=100,
        help="seed held-out cases scored at the serving reply length at the end; 0 = skip",
    )
    args = parser.parse_args()
    if args.from_corrections and not args.data_dir:
        parser.error("--from-corrections needs --data-dir")
    retrain_extra = dict(item.split("=", 1) for item in args.retrain_env)

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-loop-")
    # The database holds absolute paths into the data folder: a kept state is restored to the
    # same path, never copied elsewhere.
    kept = Path(data_dir).with_name(Path(data_dir).name + ".after-corrections")
    env = bench_env(data_dir, "" if args.in_process else f"http://127.0.0.1:{free_port()}")
    results_engine = "in-process engine" if args.in_process else "model server (llama-server)"
    timings: dict[str, float] = {}
    results: dict = {
        "per_topic_corrections": args.per_topic,
        "retrain_env": retrain_extra,
        "served_by": results_engine,
    }
    if args.from_corrections:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(kept, data_dir, symlinks=True)
        saved = json.loads((Path(data_dir) / "bench-loop-phases.json").read_text())
        results.update(
            {**saved["results"], "retrain_env": retrain_extra, "served_by": results_engine}
        )
        timings.update(saved["timings"])
    else:
        before_corrections(args, env, results, timings)
        if args.memory_only:
            results["timings"] = timings
            report_finish(results, args.out)
            return
        (Path(data_dir) / "bench-loop-phases.json").write_text(
            json.dumps({"results": results, "timings": timings}, default=str)
        )
        if args.data_dir:
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(data_dir, kept, symlinks=True)

    if args.from_corrections:
        # A state kept before the trainer ran still holds the paraphrase tasks the
        # corrections queued: run them, so the retrain's data stage finds them cached.
        results["paraphrases_ahead"] = trainer_drain(env)
    print(
        "retrain after the corrections (incremental)"
        + (f" with {retrain_extra}" if retrain_extra else "")
    )
    results["retrain"], timings["retrain_s"] = retrain(env, retrain_extra)
    print("  " + results["retrain"]["outcome"][:300])
    results["registry"] = versions_report(env)

    for name, extra in (("model", {"APPROVED_ANSWERS": "0"}), ("both", {})):
        print(f"{name}: retrained model" + (" alone" if extra else " and memory"))
        t0 = time.perf_counter()
        server = Server(env, **extra)
        timings[f"{name}_server_start_s"] = time.perf_counter() - t0
        try:
            results[name] = phase_measure(server.base)
            results[name].pop("_finished")
        finally:
            server.stop()
    if args.reply_length_cases:
        print("seed held-out at the reply length customers get")
        results["reply_length"] = seed_at_reply_length(env, limit=args.reply_length_cases)
    results["timings"] = timings
    report_finish(results, args.out)


def before_corrections(args: argparse.Namespace, env: dict, results: dict, timings: dict) -> None:
    """Set up the shop, fine-tune on the seed corpus (unless --memory-only), measure the
    serving version before and right after the agents' corrections."""
    t0 = time.perf_counter()
    manage(env, "migrate", "-v0")
    manage(env, "prepare_model")
    manage(env, "import_dataset")  # the shipped seed corpus
    timings["setup_s"] = time.perf_counter() - t0

    if not args.memory_only:
        # The shop's steady state: a model fine-tuned on the seed corpus (a full run: the base
        # version has no adapter). Capped by --seed-train-examples to keep the benchmark short.
        print(f"seed fine-tune (full, {args.seed_train_examples or 'all'} rows)")
        extra = {"TRAINING_MAX_TRAIN_EXAMPLES": str(args.seed_train_examples)}
        results["seed_retrain"], timings["seed_retrain_s"] = retrain(env, extra)
        print("  " + results["seed_retrain"]["outcome"][:300])
        results["seed_override"] = seed_version_override(env)

    print("before: serving version, empty memory")
    server = Server(env)
    try:
        results["before"] = phase_measure(server.base)
        results["before"].pop("_finished")
        print("corrections")
        corrected_at = corrections_make(server.base, env, args.per_topic)
        print("memory: right after the corrections")
        results["memory"] = phase_measure(server.base)
        finished = results["memory"].pop("_finished")
        results["memory"]["first_reply_after_correction_s"] = min(finished) - corrected_at
        results["memory"]["last_reply_after_correction_s"] = max(finished) - corrected_at
    finally:
        server.stop()
    # Meanwhile (make run's trainer does it as each correction is saved) the paraphrases of
    # the corrected questions are written for the next retrain.
    ahead = trainer_drain(env)
    ahead["ready_after_correction_s"] = round(time.time() - corrected_at, 1)
    results["paraphrases_ahead"] = ahead
    print(f"  trainer: {ahead}")


def seed_version_override(env: dict) -> str:
    """The loop is measured on a fine-tuned parent: when the gate rejected the seed fine-tune,
    promote it as an admin would ("promote anyway", recorded as an override) and say so."""
    script = (
        "from training.models import ModelVersion\n"
        "from training.registry import version_promote\n"
        "v = ModelVersion.objects.order_by('-number').first()\n"
        "if v.status == ModelVersion.Status.REJECTED:\n"
        "    version_promote(version_id=v.pk, actor='bench-loop', override=True,\n"
        "                    reason='benchmark: the loop is measured on a fine-tuned parent')\n"
        "    print(f'v{v.number} promoted by admin override (the gate rejected it)')\n"
        "else:\n"
        "    print(f'v{v.number} {v.status}')\n"
    )
    said = manage(env, "shell", "-c", script).strip().splitlines()[-1]
    print("  " + said)
    return said


def report_finish(results: dict, out: str) -> None:
    if out:
        Path(out).write_text(json.dumps(results, indent=2, default=str))
    report_print(results)


def report_print(results: dict) -> None:
    print()
    print(f"corrections: {results['per_topic_corrections']} per topic x {len(TOPICS)} topics")
    print(f"replies served by: {results.get('served_by', 'in-process engine')}")
    header = f"{'phase':8s} {'facts stated':>12s} " + " ".join(f"{t.name:>9s}" for t in TOPICS)
    print(header + "  verbatim  in-prompt  control-hit  raw-slots  unanswered")
    for phase in ("before", "memory", "model", "both"):
        if phase not in results:
            continue
        r = results[phase]
        topics = " ".join(f"{r['per_topic'][t.name]:9.0%}" for t in TOPICS)
        print(
            f"{phase:8s} {r['facts_stated']:12.0%} {topics}"
            f"  {r['answered_verbatim_from_memory']:8.0%}"
            f"  {r['memory_in_prompt']:9.0%}  {r['control_given_approved_answer']:11.0%}"
            f"  {r['raw_slots']:9d}  {len(r.get('unanswered', [])):10d}"
        )
    memory = results.get("memory", {})
    if memory:
        print(
            "first/last reply after the last correction: "
            f"{memory['first_reply_after_correction_s']:.1f} s / "
            f"{memory['last_reply_after_correction_s']:.1f} s"
        )
    if results.get("paraphrases_ahead"):
        print(f"paraphrases written by the trainer: {json.dumps(results['paraphrases_ahead'])}")
    if results.get("reply_length"):
        print(f"seed held-out at the serving reply length: {json.dumps(results['reply_length'])}")
    if results.get("seed_override"):
        print(f"seed fine-tune: {results['seed_override']}")
    if results.get("retrain_env"):
        print(f"incremental retrain settings: {results['retrain_env']}")
    registry = results.get("registry", {})
    if not registry:
        return
    for key in ("seed_retrain", "retrain"):
        run = results.get(key)
        if run:
            seconds = results["timings"].get(f"{key}_s", 0)
            stages = json.dumps(run["stages"])
            print(f"{key}: {seconds:.0f} s, {run['status']}; stages (s) {stages}")
            print(f"   {run['outcome'] or run['error']}"[:600])
    shown = (
        "cases",
        "seed_cases",
        "seed_rouge_l",
        "seed_semantic_similarity",
        "corrections_cases",
        "corrections_score",
        "semantic_similarity",
        "safety_template_slot_rate",
        "seconds",
    )
    for version in registry.get("versions", []):
        metrics = version.get("metrics") or {}
        print(f"v{version['number']} {version['status']}")
        for label, evaluation in (
            ("evaluated", metrics.get("evaluation")),
            ("its parent", (metrics.get("compared_with") or {}).get("evaluation")),
        ):
            if evaluation:
                figures = {k: evaluation.get(k) for k in shown if k in evaluation}
                print(f"   {label}: {json.dumps(figures)}")
        if version.get("reason"):
            print(f"   reason: {version['reason'][:500]}")
    print("timings (s): " + json.dumps({k: round(v, 1) for k, v in results["timings"].items()}))


if __name__ == "__main__":
    main()
