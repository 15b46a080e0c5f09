"""OpenVINO GenAI (continuous batching) on the prompts of bench_model_server, for comparison.

Issue 10 names OpenVINO GenAI as the fallback engine; this measures it beside llama.cpp on the
same 683-token retrieval prompts, greedy, 128 new tokens (EOS ignored): one chat at a time,
8 at once (each prompt's prefix seen once before), 50 arriving at once (16 tokens). It runs in
its own virtual environment, since optimum-intel pins its own transformers:

    .venv/bin/python benchmarks/bench_openvino.py --prompts var/ov-prompts.json
    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install torch==2.13.0 openvino-genai \\
        "optimum-intel[openvino]" && /tmp/ov/bin/pip uninstall -y torchvision
    /tmp/ov/bin/optimum-cli export openvino --model var/models/smollm2-135m-instruct \\
        --task text-generation-with-past --weight-format int8 var/ov-model-int8
    /tmp/ov/bin/python benchmarks/bench_openvino.py --measure var/ov-model-int8 \\
        --prompts var/ov-prompts.json
"""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prompts_write(path: Path) -> None:
    """The chat-templated prompt texts (the project's own venv)."""
    import os

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from bench_model_server import QUESTIONS, retrieval_messages
    from transformers import AutoTokenizer

    from chatbot.serving.versions import base_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path()))

    def text(question: str) -> str:
        messages = retrieval_messages(question)
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    path.write_text(
        json.dumps(
            {
                "single": [text(q) for q in QUESTIONS],
                "eight": [text(QUESTIONS[i % 5] + f" ({i})") for i in range(8)],
                "fifty": [text(f"Question {i}: {QUESTIONS[i % 5]}") for i in range(50)],
            }
        )
    )


def measure(model_dir: str, prompts: dict, threads: int) -> None:
    import openvino_genai as og

    scheduler = og.SchedulerConfig()
    scheduler.cache_size = 1  # GB of KV cache
    scheduler.max_num_batched_tokens = 256  # prefill steps, as MODEL_SERVER_BATCH_TOKENS
    scheduler.enable_prefix_caching = True
    scheduler.max_num_seqs = 8
    pipe = og.ContinuousBatchingPipeline(
        model_dir, scheduler, "CPU", {"INFERENCE_NUM_THREADS": threads}
    )

    def config(tokens: int):
        c = og.GenerationConfig()
        c.max_new_tokens, c.do_sample, c.ignore_eos = tokens, False, True
        return c

    def run(texts: list[str], tokens: int):
        start = time.perf_counter()
        handles = [pipe.add_request(i, t, config(tokens)) for i, t in enumerate(texts)]
        first: dict[int, float] = {}
        done: dict[int, float] = {}
        count: dict[int, int] = {}
        while pipe.has_non_finished_requests():
            pipe.step()
            now = time.perf_counter() - start
            for i, handle in enumerate(handles):
                if handle.can_read():
                    got = sum(len(o.generated_ids) for o in handle.read().values())
                    if got and i not in first:
                        first[i] = now
                    count[i] = count.get(i, 0) + got
                if i not in done and handle.get_status() == og.GenerationStatus.FINISHED:
                    done[i] = now
        wall = time.perf_counter() - start
        return wall, first, {i: done.get(i, wall) for i in range(len(texts))}, count

    run(prompts["single"][:1], 4)  # warm
    singles = []
    for text in prompts["single"]:
        _, first, done, count = run([text], 128)
        singles.append((first[0], (count[0] - 1) / (done[0] - first[0])))
    print(f"single chat: TTFT p50 {statistics.median(s[0] for s in singles):.3f} s, ", end="")
    print(f"decode p50 {statistics.median(s[1] for s in singles):.1f} tokens/s")
    run(prompts["eight"], 128)
    wall, first, done, count = run([p.replace(" (", " [") for p in prompts["eight"]], 128)
    rates = [(count[i] - 1) / (done[i] - first[i]) for i in range(8)]
    print(
        f"8 chats: aggregate {sum(count.values()) / wall:.1f} tokens/s, slowest chat "
        f"{min(rates):.1f}, last first token {max(first.values()):.2f} s"
    )
    _, first, _, _ = run(prompts["fifty"], 16)
    ttfts = list(first.values())
    print(
        f"50 arrivals: TTFT p50 {statistics.median(ttfts):.2f} s, max {max(ttfts):.2f} s, "
        f"{sum(t <= 5 for t in ttfts)} within 5 s"
    )
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--measure", metavar="OPENVINO_MODEL_DIR")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, json.loads(args.prompts.read_text()), args.threads)
    else:
        prompts_write(args.prompts)


if __name__ == "__main__":
    main()
