"""Evaluate a model (base or fine-tuned artifact) on the frozen evaluation cases.

A case is {"id", "kind": "seed" | "correction" | "regression", "prompt": [messages ending
with a user turn], "expected": reference reply, "correction_id", "topic"} (a snapshot's
`eval.jsonl`). Every case gets its own scores (MiniLM cosine similarity to the reference,
ROUGE-L F1, token F1, failed safety checks), so the gate can pair cases and bootstrap; the
report's means are computed from them. Generation is greedy, batched (left-padded, cases
sorted by length) and runs in bf16 where the CPU or GPU supports it. Validation loss
(teacher-forced on the reference) is optional: the gate does not use it.
"""

import math
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings

from chatbot.pii import pii_find
from training.data.cleaning import text_is_abusive
from training.data.slots import raw_slots

ORDER_NUMBER = re.compile(r"#\s?\d{3,}|\b\d{5,}\b|\b[A-Z]{2,4}-\d{3,}\b")
SAFETY_CHECKS = ("toxic", "pii_leak", "raw_slot", "invented_order_number")
EVAL_FILE = "eval.jsonl"
Progress = Callable[[dict], None]


@dataclass
class EvalReport:
    artifact: str
    cases: int
    val_loss: float | None
    perplexity: float | None
    rouge_l: float
    token_f1: float
    embedding_similarity: float
    safety: dict
    max_new_tokens: int
    seconds: float
    bf16: bool = False
    engine: str = ""  # what wrote the replies: "bf16", "float32", "llama.cpp Q8_0"
    samples: list[dict] = field(default_factory=list)
    # One record per case, in case order: {"id", "kind", "correction_id", "topic",
    # "semantic_similarity", "rouge_l", "token_f1", "safety": [failed checks]}.
    per_case: list[dict] = field(default_factory=list)

    @property
    def case_similarity(self) -> list[float]:
        return [c["semantic_similarity"] for c in self.per_case]

    def to_dict(self) -> dict:
        return asdict(self)


def _tokens(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-words F1 (lowercased, punctuation removed)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def safety_flags(reply: str, *, prompt_text: str) -> dict[str, bool]:
    """Which safety checks a reply fails. Numbers and personal data the customer gave
    (present in the prompt) do not count as invented or leaked."""
    allowed = tuple(v for v in (settings.SHOP_SUPPORT_EMAIL, settings.SHOP_SUPPORT_PHONE) if v)
    leaks = [item for item in pii_find(reply, allowed=allowed) if item not in prompt_text]
    numbers = [n for n in ORDER_NUMBER.findall(reply) if n.lstrip("# ") not in prompt_text]
    return {
        "toxic": text_is_abusive(reply),
        "pii_leak": bool(leaks),
        "raw_slot": bool(raw_slots(reply)),
        "invented_order_number": bool(numbers),
    }


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def case_from_row(row: dict) -> dict:
    """A snapshot row {"messages": [..., assistant]} as an evaluation case (its last reply
    is the reference); a correction row keeps its correction id."""
    messages = row["messages"]
    correction_id = row.get("correction_id")
    return {
        "id": str(row.get("id") or row.get("key") or row.get("conversation_id") or ""),
        "kind": "correction" if correction_id is not None else "seed",
        "prompt": messages[:-1],
        "expected": messages[-1]["content"],
        "correction_id": correction_id,
        "topic": row.get("topic", ""),
    }


def snapshot_eval_cases(snapshot) -> list[dict]:
    """The frozen evaluation set of a snapshot: its `eval.jsonl`; for a snapshot written
    before that file existed, or a corpus too small to draw one (a handful of rows), its
    validation rows beyond the early-stopping ones (also held out by a stable hash)."""
    import json

    from training.config import train_config
    from training.data.snapshot import snapshot_rows

    path = Path(snapshot.path) / EVAL_FILE
    if path.exists():
        with path.open(encoding="utf-8") as stream:
            cases = [json.loads(line) for line in stream if line.strip()]
        if cases:
            return cases
    rows = snapshot_rows(snapshot, "validation")
    skip = train_config().max_eval_examples
    held_out = rows[skip:] if len(rows) > skip else rows
    return [case_from_row(r) for r in held_out if r["messages"][-1]["role"] == "assistant"]


def evaluation_cases(snapshot_id: str | int | None = None, *, limit: int = 0) -> list[dict]:
    """The evaluation cases of a snapshot (newest by default): every correction case and the
    first `limit` others (0 = all). The file order is stable, so the same cases come back."""
    from training.data.snapshot import snapshot_get

    cases = snapshot_eval_cases(snapshot_get(snapshot_id))
    if not limit:
        return cases
    others = [c for c in cases if c.get("kind") != "correction"][:limit]
    keep = {id(c) for c in others}
    return [c for c in cases if c.get("kind") == "correction" or id(c) in keep]


def _validation_loss(model, tokenizer, cases, system: str, batch_size: int) -> float:
    import torch

    from training.chat_format import ChatCollator, chat_tokenize

    features = [
        f
        for f in (
            chat_tokenize(
                tokenizer,
                [*c["prompt"], {"role": "assistant", "content": c["expected"]}],
                system=system,
                max_length=4096,
            )
            for c in cases
        )
        if f is not None
    ]
    features.sort(key=lambda f: f["length"])
    collate = ChatCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in _batches(features, batch_size):
            inputs = collate(batch)
            logits = model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).logits.float()
            labels = inputs["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += losses.item()
            count += int((labels != -100).sum())
    return total / max(count, 1)


def replies_generate(
    model,
    tokenizer,
    prompts: list[list[dict]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy replies, in prompt order. Prompts are batched longest first (similar lengths
    share a batch: little padding, and a too-long batch fails at once), left-padded."""
    import torch

    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    replies: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    done = 0
    with torch.inference_mode():
        for batch in _batches(order, batch_size):
            encoded = tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = output[:, encoded["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, text in zip(batch, decoded, strict=True):
                replies[i] = text.replace("\x00", "").strip()  # NUL: not storable as JSON text
            done += len(batch)
            if progress:
                progress({"done": done, "total": len(prompts)})
    return replies


def cases_score(cases: list[dict], replies: list[str], *, system: str) -> list[dict]:
    """Per-case scores of `replies` against the cases' references (see EvalReport)."""
    from rouge_score import rouge_scorer

    from chatbot.knowledge.embedding import texts_embed

    references = [c["expected"] for c in cases]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    similarity = (texts_embed(replies) * texts_embed(references)).sum(axis=1)
    records = []
    for case, reply, ref, sim in zip(cases, replies, references, similarity, strict=True):
        prompt_text = "\n".join(m["content"] for m in case["prompt"])
        flags = safety_flags(reply, prompt_text=prompt_text)
        records.append(
            {
                "id": case["id"],
                "kind": case.get("kind", "seed"),
                "correction_id": case.get("correction_id"),
                "topic": case.get("topic", ""),
                "semantic_similarity": round(float(sim), 4),
                "rouge_l": round(scorer.score(ref, reply)["rougeL"].fmeasure, 4),
                "token_f1": round(token_f1(reply, ref), 4),
                "safety": [check for check in SAFETY_CHECKS if flags[check]],
            }
        )
    return records


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else math.nan


def evaluate_artifact(
    artifact_path: str | Path,
    *,
    base_path: str | Path,
    cases: list[dict],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    bf16: bool | None = None,
    loss: bool = True,
    progress: Progress | None = None,
) -> EvalReport:
    """Score a model folder (full model, or LoRA adapter merged onto `base_path`) on `cases`
    (evaluation cases, or snapshot rows with "messages", converted by `case_from_row`).

    bf16=None uses bf16 where the hardware has it (the adapter is merged in float32 first).
    `progress` gets {"done", "total"} in cases after each batch of replies.
    Raises chatbot.serving.loading.ModelLoadError for a missing or corrupt artifact.
    """
    import torch

    from chatbot.serving.loading import model_load
    from training.train import bf16_usable, system_prompt_for_training

    started = time.monotonic()
    cases = [case_from_row(c) if "messages" in c else c for c in cases]
    cases = [c for c in cases if c["prompt"] and c["prompt"][-1]["role"] == "user"]
    if not cases:
        raise ValueError("No evaluation cases ending in a customer message.")
    loaded = model_load(artifact_path, base_path=base_path, dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    bf16 = bf16_usable() if bf16 is None else bf16
    if bf16:
        model = model.to(torch.bfloat16)
    system = system_prompt_for_training()
    val_loss = _validation_loss(model, tokenizer, cases, system, batch_size) if loss else None
    prompts = [[{"role": "system", "content": system}, *c["prompt"]] for c in cases]
    replies = replies_generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    return _report(
        str(artifact_path),
        cases,
        replies,
        system=system,
        max_new_tokens=max_new_tokens,
        started=started,
        val_loss=val_loss,
        bf16=bf16,
    )


def engine_label(*, served: bool, bf16: bool) -> str:
    """What writes a version's evaluation replies, as reports and the dashboard name it."""
    if served:
        return f"llama.cpp {settings.MODEL_SERVER_QUANT}"
    return "bf16" if bf16 else "float32"


def _report(
    artifact: str,
    cases: list[dict],
    replies: list[str],
    *,
    system: str,
    max_new_tokens: int,
    started: float,
    val_loss: float | None = None,
    bf16: bool = False,
    served: bool = False,
) -> EvalReport:
    per_case = cases_score(cases, replies, system=system)
    return EvalReport(
        artifact=artifact,
        cases=len(cases),
        val_loss=round(val_loss, 4) if val_loss is not None else None,
        perplexity=round(math.exp(val_loss), 3) if val_loss is not None else None,
        rouge_l=_mean([c["rouge_l"] for c in per_case]),
        token_f1=_mean([c["token_f1"] for c in per_case]),
        embedding_similarity=_mean([c["semantic_similarity"] for c in per_case]),
        safety={check: sum(check in c["safety"] for c in per_case) for check in SAFETY_CHECKS},
        max_new_tokens=max_new_tokens,
        seconds=round(time.monotonic() - started, 1),
        bf16=bf16,
        engine=engine_label(served=served, bf16=bf16),
        per_case=per_case,
        # With the case's ids, so deleting a customer's data can find their samples.
        samples=[
            {
                "id": c.get("id"),
                "correction_id": c.get("correction_id"),
                "prompt": c["prompt"][-1]["content"],
                "reference": c["expected"],
                "reply": r,
            }
            for c, r in list(zip(cases, replies, strict=True))[:3]
        ],
    )


def replies_from_server(
    url: str,
    prompts: list[list[int]],
    params,
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy replies of a llama-server to prompts given as token ids, in prompt order, with
    the sampling customers' replies get (`chatbot.serving.remote.completion_request`); as
    many requests at once as the server has slots (its continuous batching does the rest)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from chatbot.serving.model_server import auth_headers
    from chatbot.serving.remote import completion_request

    # A fresh connection per request: llama-server may drop a kept-alive one unannounced.
    headers = {**auth_headers(), "Connection": "close"}
    done = 0

    def one(ids: list[int]) -> str:
        body = {**completion_request(ids, "", params), "stream": False}
        response = httpx.post(f"{url}/completion", json=body, headers=headers, timeout=600)
        response.raise_for_status()
        return str(response.json()["content"]).replace("\x00", "").strip()

    replies: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, settings.MODEL_SERVER_SLOTS)) as pool:
        for reply in pool.map(one, prompts):
            replies.append(reply)
            done += 1
            if progress and (done % 8 == 0 or done == len(prompts)):
                progress({"done": done, "total": len(prompts)})
    return replies


def evaluate_served(
    target,
    *,
    cases: list[dict],
    max_new_tokens: int = 64,
    progress: Progress | None = None,
) -> EvalReport:
    """Score a version as customers get it: its GGUF (`MODEL_SERVER_QUANT`) on a llama-server
    of its own with the serving engine's settings, prompts made and cut as the gateway makes
    them, the serving sampling. `target` is a chatbot.serving.versions.ServingTarget.
    Raises chatbot.serving.model_server.ConversionError when the GGUF cannot be made."""
    from dataclasses import replace

    from chatbot.serving.gateway import default_params
    from chatbot.serving.model_server import gguf_ensure, server_private
    from chatbot.serving.remote import prompt_ids
    from training.train import system_prompt_for_training

    started = time.monotonic()
    cases = [case_from_row(c) if "messages" in c else c for c in cases]
    cases = [c for c in cases if c["prompt"] and c["prompt"][-1]["role"] == "user"]
    if not cases:
        raise ValueError("No evaluation cases ending in a customer message.")
    system = system_prompt_for_training()
    # Greedy whatever the shop samples with: a version's scores are kept for its next runs.
    params = replace(default_params(), max_new_tokens=max_new_tokens, temperature=0.0)
    prompts = [
        prompt_ids([{"role": "system", "content": system}, *c["prompt"]], target, params)
        for c in cases
    ]
    model = gguf_ensure(target)
    with server_private(model) as url:
        replies = replies_from_server(url, prompts, params, progress=progress)
    return _report(
        str(model),
        cases,
        replies,
        system=system,
        max_new_tokens=max_new_tokens,
        started=started,
        served=True,
    )


def reports_table(reports: list[EvalReport]) -> str:
    """A plain-text table, one column per report."""
    rows: list[tuple[str, Callable[[EvalReport], str]]] = [
        ("engine", lambda r: r.engine),
        ("cases", lambda r: str(r.cases)),
        ("validation loss", lambda r: "-" if r.val_loss is None else f"{r.val_loss:.4f}"),
        ("perplexity", lambda r: "-" if r.perplexity is None else f"{r.perplexity:.2f}"),
        ("ROUGE-L F1", lambda r: f"{r.rouge_l:.4f}"),
        ("token F1", lambda r: f"{r.token_f1:.4f}"),
        ("embedding similarity", lambda r: f"{r.embedding_similarity:.4f}"),
        *[(f"safety: {c}", lambda r, c=c: str(r.safety[c])) for c in SAFETY_CHECKS],
        ("max new tokens", lambda r: str(r.max_new_tokens)),
        ("seconds", lambda r: f"{r.seconds:.0f}"),
    ]
    names = [Path(r.artifact).name or r.artifact for r in reports]
    width = max(len(n) for n in names + ["metric"]) + 2
    label = max(len(name) for name, _ in rows) + 2
    lines = ["metric".ljust(label) + "".join(n.rjust(width) for n in names)]
    lines.append("-" * len(lines[0]))
    for name, cell in rows:
        lines.append(name.ljust(label) + "".join(cell(r).rjust(width) for r in reports))
    return "\n".join(lines)
