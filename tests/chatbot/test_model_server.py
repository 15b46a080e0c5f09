"""The model server: a real llama-server (router mode) on the real model, through the gateway."""

import asyncio
import json
import os
import re
import signal
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from django.test import override_settings

from chatbot.prompting import chat_messages, system_prompt
from chatbot.serving import gateway
from chatbot.serving.engine import GenerationParams, copy_text_ids, copy_token_ids
from chatbot.serving.model_server import gguf_ensure, model_link, server_spawn
from chatbot.serving.remote import completion_request
from chatbot.serving.versions import ServingTarget

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PARAMS = GenerationParams(
    max_new_tokens=48, context_tokens=2048, temperature=0.0, repetition_penalty=1.1
)
SEED = Path(__file__).resolve().parents[2] / "training" / "seed_data" / "bitext-cs-2000.jsonl"


@dataclass
class Served:
    url: str
    models: Path
    proc: object


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_target(real_model_dir: Path, number: int = 1) -> ServingTarget:
    return ServingTarget(
        version_id=number,
        version_number=number,
        artifact_path=str(real_model_dir),
        base_path=str(real_model_dir),
    )


def stop(proc) -> None:
    """Stop the router and its model children (they share its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def spawn(models: Path, log: Path) -> Served:
    port = free_port()
    with override_settings(MODEL_SERVER_MODELS_DIR=models):
        proc = server_spawn(port=port, log_path=log)
    return Served(url=f"http://127.0.0.1:{port}", models=models, proc=proc)


@pytest.fixture(scope="module")
def served(real_model_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("served")
    with override_settings(MODEL_SERVER_MODELS_DIR=models):
        model_link(base_target(real_model_dir))
    server = spawn(models, models.parent / "llama-server.log")
    yield server
    stop(server.proc)


@pytest.fixture
def remote(settings, served):
    settings.MODEL_SERVER_URL = served.url
    settings.MODEL_SERVER_MODELS_DIR = served.models
    return served


async def collect(messages, target, params=PARAMS) -> list:
    return [event async for event in gateway.reply_stream(messages, target, params)]


def test_sampling_matches_the_in_process_engine():
    body = completion_request([1, 2, 3], "v4", PARAMS)
    assert body["model"] == "v4" and body["prompt"] == [1, 2, 3] and body["stream"]
    assert body["temperature"] == 0.0  # greedy
    assert (body["top_k"], body["top_p"], body["min_p"]) == (0, 1.0, 0.0)  # plain softmax
    assert body["n_predict"] == 48
    # Repetition is held off by DRY, not by a token penalty that would also hit the prompt.
    assert body["repeat_penalty"] == 1.0 and body["dry_multiplier"] > 0
    plain = completion_request([1], "v4", GenerationParams(repetition_penalty=1.0))
    assert plain["dry_multiplier"] == 0.0 and "logit_bias" not in plain
    # An approved answer's tokens favoured: sent as llama.cpp's logit_bias, and DRY (which
    # also counts the prompt, where the approved answer stands) is off.
    copying = replace(PARAMS, copy_text="45 days", copy_bias=2.0)
    biased = completion_request([1], "v4", copying, biased={7, 3})
    assert biased["logit_bias"] == [[3, 2.0], [7, 2.0]] and biased["dry_multiplier"] == 0.0


def test_replies_share_one_tls_context_that_still_verifies():
    import ssl

    from chatbot.serving import remote

    context = remote._tls_context()
    assert context is remote._tls_context()  # built once, not per reply (~20 ms of CPU each)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_a_reply_streams_from_the_model_server(remote, real_model_dir):
    messages = chat_messages([("customer", "How do I track my order?")], system=system_prompt())
    events = await collect(messages, base_target(real_model_dir))
    tokens = [e.text for e in events if e.kind == "token"]
    done = events[-1]
    assert done.kind == "done", done.text
    assert len(tokens) >= 5  # streamed piece by piece, not in one lump
    assert "".join(tokens).strip()
    assert 0 < done.token_count <= PARAMS.max_new_tokens
    assert done.prompt_tokens > 20


async def test_a_copy_bias_reaches_the_model_server(remote, real_model_dir):
    """The approved answer's tokens, favoured through the gateway: with a bias of 100 every
    token llama-server writes is one of the copy text's; without it the reply differs."""
    from transformers import AutoTokenizer

    copy_text = "Standard delivery takes 3 to 5 business days with GLS."
    messages = chat_messages([("customer", "Do you sell gift cards?")], system=system_prompt())
    target = base_target(real_model_dir)
    biased = replace(PARAMS, max_new_tokens=16, copy_text=copy_text, copy_bias=100.0)
    plain = replace(biased, copy_bias=0.0)
    texts = []
    for params in (biased, plain):
        events = await collect(messages, target, params)
        assert events[-1].kind == "done", events[-1].text
        texts.append("".join(e.text for e in events if e.kind == "token"))
    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    pieces = {tokenizer.decode([t]) for t in copy_token_ids(tokenizer, biased)}
    copied = re.compile("(?:" + "|".join(map(re.escape, sorted(pieces, key=len)[::-1])) + ")+")
    assert copied.fullmatch(texts[0]), texts[0]
    assert not copied.fullmatch(texts[1]), texts[1]


async def test_a_follow_bias_copies_the_approved_answer_through_the_model_server(
    remote, real_model_dir
):
    """The follow bias changes with every token, so the gateway asks llama-server one token
    at a time: with a follow bias of 100 the reply is the copy text as written, streamed in
    pieces and counted like any reply; without it the model writes its own."""
    from transformers import AutoTokenizer

    copy_text = "Standard delivery takes 3 to 5 business days with GLS."
    messages = chat_messages([("customer", "Do you sell gift cards?")], system=system_prompt())
    target = base_target(real_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    followed = replace(PARAMS, copy_text=copy_text, copy_bias=1.0, copy_follow_bias=100.0)
    size = len(copy_text_ids(tokenizer, followed))
    events = await collect(messages, target, replace(followed, max_new_tokens=size + 4))
    done = events[-1]
    tokens = [e.text for e in events if e.kind == "token"]
    assert done.kind == "done", done.text
    assert "".join(tokens).startswith(copy_text), tokens
    assert len(tokens) >= 5 and done.token_count <= size + 4 and done.prompt_tokens > 20
    plain = await collect(messages, target, replace(followed, max_new_tokens=size, copy_bias=0))
    assert not "".join(e.text for e in plain if e.kind == "token").startswith(copy_text)


async def test_the_reply_limit_marks_the_reply_truncated(remote, real_model_dir):
    params = GenerationParams(max_new_tokens=4, temperature=0.0, repetition_penalty=1.1)
    messages = chat_messages([("customer", "Tell me about refunds.")], system=system_prompt())
    events = await collect(messages, base_target(real_model_dir), params)
    assert events[-1].kind == "done" and events[-1].truncated
    assert events[-1].token_count == 4


async def test_a_long_chat_is_cut_to_its_slots_share_of_the_kv_cache(
    settings, real_model_dir, served, tmp_path
):
    """Each slot has KV_TOKENS / SLOTS tokens of its own: a history longer than that is cut
    by the gateway (oldest turns first) instead of being refused by the server."""
    settings.MODEL_SERVER_SLOTS = 2
    settings.MODEL_SERVER_KV_TOKENS = 1024  # 512 tokens a slot
    own = spawn(served.models, tmp_path / "small.log")
    settings.MODEL_SERVER_URL = own.url
    settings.MODEL_SERVER_MODELS_DIR = served.models
    turns = []
    for i in range(30):
        turns += [("customer", f"Question {i}: where is my parcel number {i}?")]
        turns += [("bot", f"Answer {i}: parcel {i} left our warehouse yesterday.")]
    messages = chat_messages([*turns, ("customer", "And the last one?")], system=system_prompt())
    try:
        events = await collect(messages, base_target(real_model_dir))
    finally:
        stop(own.proc)
    done = events[-1]
    assert done.kind == "done", done.text
    assert sum(len(m["content"]) for m in messages) // 3 > 1000  # far more than 512 tokens
    assert done.prompt_tokens <= 512 - PARAMS.max_new_tokens


async def test_no_model_server_is_a_clear_error(settings, real_model_dir):
    settings.MODEL_SERVER_URL = f"http://127.0.0.1:{free_port()}"
    events = await collect([{"role": "user", "content": "hi"}], base_target(real_model_dir))
    assert [e.kind for e in events] == ["error"]
    assert "model server failed" in events[0].text


async def test_a_server_killed_mid_reply_ends_with_an_error(
    settings, real_model_dir, served, tmp_path
):
    own = spawn(served.models, tmp_path / "killed.log")
    settings.MODEL_SERVER_URL = own.url
    settings.MODEL_SERVER_MODELS_DIR = served.models
    params = GenerationParams(max_new_tokens=400, temperature=0.0, repetition_penalty=1.0)
    messages = [{"role": "user", "content": "Count from one to two hundred in words."}]
    events = []
    try:
        async for event in gateway.reply_stream(messages, base_target(real_model_dir), params):
            events.append(event)
            if len(events) == 3:
                stop(own.proc)
    finally:
        if own.proc.poll() is None:
            stop(own.proc)
    assert [e.kind for e in events[:3]] == ["token"] * 3
    assert events[-1].kind == "error", events[-1]
    assert "model server failed" in events[-1].text


async def test_promotion_swaps_versions_without_cutting_a_reply(remote, real_model_dir, tmp_path):
    """v1 streams a long reply while v2 (a fine-tuned adapter, merged and converted to GGUF)
    is published and answers; the v1 reply still finishes whole."""
    adapter = adapter_make(real_model_dir, tmp_path / "v2-adapter")
    v2 = ServingTarget(
        version_id=2, version_number=2, artifact_path=str(adapter), base_path=str(real_model_dir)
    )
    gguf = await asyncio.to_thread(gguf_ensure, v2)
    assert gguf.parent == adapter and gguf.stat().st_size > 50_000_000
    base_gguf = (remote.models / "v1.gguf").resolve()
    assert file_digest(gguf) != file_digest(base_gguf)  # the adapter was merged in

    long_params = GenerationParams(max_new_tokens=160, temperature=0.0, repetition_penalty=1.0)
    question = [{"role": "user", "content": "Explain in detail how returns work."}]
    first = asyncio.create_task(collect(question, base_target(real_model_dir), long_params))
    await asyncio.sleep(1.0)
    assert not first.done()
    second = await collect(question, v2, PARAMS)  # v2 is unknown: published on first use
    assert second[-1].kind == "done", second[-1].text
    v1_events = await first
    assert v1_events[-1].kind == "done", v1_events[-1].text
    assert v1_events[-1].token_count == 160 or not v1_events[-1].truncated
    assert (served_file := remote.models / "v2.gguf").exists()
    assert served_file.resolve() == gguf.resolve()


def file_digest(path: Path) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def adapter_make(base: Path, out: Path) -> Path:
    """A LoRA adapter on the real base with non-zero weights (so the merge changes it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(0.01)  # small: a plausible fine-tune, not noise
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def seed_cases(count: int) -> list[dict]:
    """Seed questions held out of training (the frozen evaluation split's hash rule)."""
    from training.config import TrainConfig
    from training.data.snapshot import stable_fraction

    share = TrainConfig().eval_seed_share
    rows = [json.loads(line) for line in SEED.read_text().splitlines() if line.strip()]
    held = [r for r in rows if stable_fraction(r["id"], "eval") < share]
    held.sort(key=lambda r: stable_fraction(r["id"], "eval"))
    return held[:count]


async def test_quantized_replies_are_as_good_as_bf16(remote, real_model_dir):
    """ROUGE-L within 1 point and MiniLM similarity within 0.01 of the bf16 engine on seed
    held-out cases, and no raw {{slot}} the bf16 engine did not write."""
    from asgiref.sync import sync_to_async

    from training.evaluate import cases_score

    settings_params = GenerationParams(
        max_new_tokens=96, context_tokens=2048, temperature=0.0, repetition_penalty=1.1
    )
    rows = seed_cases(12)
    cases = [
        {
            "id": r["id"],
            "prompt": chat_messages([("customer", r["customer"])], system=system_prompt()),
            "expected": r["agent"],
        }
        for r in rows
    ]
    target = base_target(real_model_dir)

    async def replies(url: str) -> list[str]:
        # One at a time: a batch's make-up changes both engines' float sums, and so their
        # greedy text (bf16 against itself moved 0.04 in similarity between batched runs).
        with override_settings(MODEL_SERVER_URL=url):
            results = [await collect(c["prompt"], target, settings_params) for c in cases]
        assert all(r[-1].kind == "done" for r in results), results
        return ["".join(e.text for e in r if e.kind == "token").strip() for r in results]

    quantized = await replies(remote.url)
    reference = await replies("")  # the in-process bf16 engine
    gateway.engines_shutdown()
    scored_q = await sync_to_async(cases_score)(cases, quantized, system="")
    scored_r = await sync_to_async(cases_score)(cases, reference, system="")

    def mean(scored, key):
        return sum(s[key] for s in scored) / len(scored)

    rouge = (mean(scored_q, "rouge_l"), mean(scored_r, "rouge_l"))
    similarity = (mean(scored_q, "semantic_similarity"), mean(scored_r, "semantic_similarity"))
    print(f"ROUGE-L quantized {rouge[0]:.4f} bf16 {rouge[1]:.4f}")
    print(f"similarity quantized {similarity[0]:.4f} bf16 {similarity[1]:.4f}")
    assert rouge[0] >= rouge[1] - 0.01
    assert similarity[0] >= similarity[1] - 0.01
    slots_q = sum("{{" in reply for reply in quantized)
    assert slots_q <= sum("{{" in reply for reply in reference)


@pytest.mark.django_db
def test_the_gate_scores_a_version_as_customers_get_it(remote, settings, real_model_dir):
    """Where model servers serve, `version_evaluate` (the gate's scoring) runs the version's
    GGUF on a llama-server of its own: its replies are the ones the gateway streams to a
    customer asking the same, and scores the in-process engine wrote do not stand in."""
    from training.pipeline import case_fingerprint, version_evaluate
    from training.registry import base_version_ensure
    from training.train import system_prompt_for_training

    settings.CHAT_BASE_MODEL_PATH = str(real_model_dir)
    settings.TRAINING_EVAL_MAX_NEW_TOKENS = 24
    settings.MODEL_SERVER_SLOTS = 1  # one at a time, like the gateway below: batching moves text
    version = base_version_ensure()
    system = system_prompt_for_training()
    cases = [
        {
            "id": r["id"],
            "kind": "seed",
            "prompt": [{"role": "user", "content": r["customer"]}],
            "expected": r["agent"],
        }
        for r in seed_cases(3)
    ]
    stale = {"semantic_similarity": 1.0, "rouge_l": 1.0, "token_f1": 1.0, "safety": []}
    version.metrics = {
        "scored_cases": {
            case_fingerprint(c, system=system, max_new_tokens=24, engine=engine): stale
            for c in cases
            for engine in (True, False)  # the in-process engine, bf16 and float32
        }
    }
    version.save()

    scored = version_evaluate(version, cases=cases)
    assert scored["engine"] == "llama.cpp Q8_0"
    assert (scored["generated"], scored["reused"]) == (3, 0)
    assert all(c["semantic_similarity"] < 1.0 for c in scored["per_case"])
    replies = [sample["reply"] for sample in scored["samples"]]
    assert len(replies) == 3 and all(replies)

    params = replace(gateway.default_params(), max_new_tokens=24, temperature=0.0)
    for case, reply in zip(cases, replies, strict=True):
        messages = [{"role": "system", "content": system}, *case["prompt"]]
        events = asyncio.run(collect(messages, base_target(real_model_dir), params))
        assert events[-1].kind == "done", events[-1].text
        assert "".join(e.text for e in events if e.kind == "token").strip() == reply

    again = version_evaluate(version, cases=cases)  # greedy replies of fixed weights: kept
    assert (again["generated"], again["reused"]) == (0, 3)
    assert again["per_case"] == scored["per_case"]
