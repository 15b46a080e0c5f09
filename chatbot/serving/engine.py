"""A generation engine: one thread owns one loaded model and decodes many chats at once.

Requests join the running batch between decode steps (continuous batching): a new chat is
prefilled on its own, its KV cache is left-padded to the batch's length and stacked onto
the batch, and finished chats leave the batch at once. Callers never block: tokens are
handed to a callback that is safe to call from this thread.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatbot.prompting import prompt_fit
from chatbot.serving.loading import LoadedModel

log = logging.getLogger(__name__)


class EngineClosed(RuntimeError):
    """The engine was stopped (its model was replaced); submit to the current one."""


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 192
    context_tokens: int = 2048
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    # Added to the logits of `copy_text`'s tokens at every step: the approved answer of a
    # looser memory match, which the small model otherwise mostly ignores in its prompt.
    copy_text: str = ""
    copy_bias: float = 0.0
    # Added on top for the tokens that continue the reply in `copy_text`'s order
    # (`copy_follow_ids`), so the answer is copied as written, not as a bag of its words.
    copy_follow_bias: float = 0.0


@dataclass
class Event:
    """What the engine reports: a piece of text, the end of a reply, or a failure."""

    kind: str  # "token" | "done" | "error"
    text: str = ""
    token_count: int = 0
    truncated: bool = False
    prompt_tokens: int = 0


@dataclass
class _Sequence:
    request_id: int
    emit: Callable[[Event], None]
    params: GenerationParams
    prompt_tokens: int
    cancelled: threading.Event
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    length: int = 0  # real (unpadded) tokens in the cache for this sequence
    biased: Any = None  # token ids given params.copy_bias (a tensor), or None
    copy_ids: list[int] = field(default_factory=list)  # copy_text in order, for the follow bias

    def send(self, event: Event) -> None:
        _emit_safely(self.emit, event, self.cancelled)


def copy_token_ids(tokenizer, params: GenerationParams) -> set[int]:
    """The token ids `params.copy_bias` applies to: every token of `params.copy_text`
    (none without a bias)."""
    if not params.copy_bias or not params.copy_text.strip():
        return set()
    ids = set(tokenizer(params.copy_text, add_special_tokens=False)["input_ids"])
    return ids - set(tokenizer.all_special_ids)


def copy_text_ids(tokenizer, params: GenerationParams) -> list[int]:
    """`params.copy_text` as token ids in order (none without a follow bias)."""
    if not (params.copy_bias and params.copy_follow_bias) or not params.copy_text.strip():
        return []
    special = set(tokenizer.all_special_ids)
    ids = tokenizer(params.copy_text, add_special_tokens=False)["input_ids"]
    return [token for token in ids if token not in special]


# The longest tail of the reply looked up in the copy text; longer tails are rare matches.
FOLLOW_TAIL_TOKENS = 8
# A place whose next tokens the reply already holds is not followed again (no loops).
FOLLOW_SAID_TOKENS = 4


def copy_used_up(copy_ids: list[int], generated: list[int]) -> bool:
    """True once the reply holds the copy text's last tokens (FOLLOW_SAID_TOKENS) in a row:
    the answer has been given, so neither bias applies any more and the model ends its reply
    as it would (a bias kept on pushes it to write the answer's words again)."""
    end = copy_ids[-FOLLOW_SAID_TOKENS:]
    if not end:
        return False
    return any(generated[i : i + len(end)] == end for i in range(len(generated) - len(end) + 1))


def copy_follow_ids(copy_ids: list[int], generated: list[int]) -> set[int]:
    """The copy text's tokens that continue `generated` in the copy text's order: its first
    token before the reply has started; then the tokens that follow each place where the
    longest tail of the reply (up to FOLLOW_TAIL_TOKENS) occurs in it. None once the reply
    has left it or reached its end, and none that would repeat what the reply already
    said (the plain copy bias still applies)."""
    if not copy_ids:
        return set()
    if not generated:
        return {copy_ids[0]}
    n = FOLLOW_SAID_TOKENS
    said = {tuple(generated[i : i + n]) for i in range(len(generated) - n + 1)}
    for size in range(min(FOLLOW_TAIL_TOKENS, len(generated), len(copy_ids)), 0, -1):
        tail = generated[-size:]
        starts = [
            start
            for start in range(len(copy_ids) - size + 1)
            if copy_ids[start : start + size] == tail
        ]
        if not starts:
            continue
        if any(start + size == len(copy_ids) for start in starts):
            return set()  # the copy text is used up
        return {
            copy_ids[start + size]
            for start in starts
            if tuple(copy_ids[start + size : start + size + n]) not in said
        }
    return set()


def _emit_safely(emit: Callable[[Event], None], event: Event, cancelled: threading.Event) -> None:
    """A caller whose callback fails (its event loop closed) is cancelled; the engine and
    the other chats carry on."""
    try:
        emit(event)
    except Exception:  # noqa: BLE001
        log.warning("Dropping a chat whose callback failed", exc_info=True)
        cancelled.set()


class Engine:
    """Serve one model from a dedicated thread. Thread-safe `submit`, callback-based output."""

    def __init__(self, loaded: LoadedModel, *, max_batch: int = 8, threads: int = 0):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.loaded = loaded
        self.max_batch = max(1, max_batch)
        self._queue: queue.Queue = queue.Queue()
        self._ids = iter(range(1, 1 << 62))
        self._closed = False
        self._draining = False
        self._lock = threading.Lock()
        tokenizer = loaded.tokenizer
        stops = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
        stops.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self._stop_ids = {s for s in stops if s is not None}
        self._thread = threading.Thread(target=self._run, name=f"engine:{loaded.path}", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return self.loaded.path

    def submit(
        self, messages: list[dict], params: GenerationParams, emit: Callable[[Event], None]
    ) -> threading.Event:
        """Queue a chat for generation; returns an Event the caller sets to cancel it."""
        cancelled = threading.Event()
        with self._lock:
            if self._closed or not self._thread.is_alive():
                raise EngineClosed(self.path)
            self._queue.put((next(self._ids), messages, params, emit, cancelled))
        return cancelled

    def stop(self) -> None:
        """Accept no new chats; finish the ones in flight, then end the thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Serve until drained. An unexpected error anywhere in the loop fails the chats it
        holds (each hears an error event) and the loop starts again with an empty batch."""
        import torch

        with torch.inference_mode():
            while True:
                self._active: list[_Sequence] = []
                self._joining: list = []
                try:
                    self._serve()
                    return
                except Exception as exc:  # noqa: BLE001 - never leave a chat waiting
                    log.exception("Engine loop failed; failing its chats and serving on")
                    failed = Event("error", text=f"generation failed: {exc}")
                    for seq in self._active:
                        seq.send(failed)
                    for item in self._joining:
                        _emit_safely(item[3], failed, item[4])

    def _serve(self) -> None:
        active = self._active
        state = None  # (cache, attention_mask, next_input_ids)
        while not (self._draining and not active):
            self._joining = self._take_requests(block=not active, room=self.max_batch - len(active))
            while self._joining:
                item = self._joining[0]
                try:
                    seq, seq_state = self._prefill(*item)
                except Exception as exc:  # noqa: BLE001 - report, keep serving others
                    log.exception("Prefill failed")
                    _emit_safely(item[3], Event("error", text=f"generation failed: {exc}"), item[4])
                    self._joining.pop(0)
                    continue
                self._joining.pop(0)
                active.append(seq)
                if self._advance(seq, seq_state[2]):
                    state = _merge(state, seq_state) if len(active) > 1 else seq_state
                else:
                    active.pop()
            if not active:
                state = None
                continue
            state = self._decode_step(active, state)
            keep = [i for i, seq in enumerate(active) if self._advance(seq, state[2][i])]
            if len(keep) < len(active):
                active[:] = [active[i] for i in keep]
                state = _select(state, keep) if active else None

    def _take_requests(self, *, block: bool, room: int) -> list:
        """Pull up to `room` queued requests; a None in the queue means "drain and stop"."""
        items: list = []
        if room <= 0 or self._draining:
            return items
        try:
            item = self._queue.get(block=block)
            while True:
                if item is None:
                    self._draining = True
                    break
                items.append(item)
                if len(items) >= room:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return items

    def _prefill(self, request_id, messages, params, emit, cancelled):
        import torch
        from transformers import DynamicCache

        tokenizer = self.loaded.tokenizer
        budget = max(16, params.context_tokens - params.max_new_tokens)
        fitted = prompt_fit(tokenizer, messages, budget)
        ids = tokenizer.apply_chat_template(fitted, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        input_ids = torch.tensor([ids], dtype=torch.long)
        mask = torch.ones_like(input_ids)
        cache = DynamicCache()
        out = self.loaded.model(
            input_ids=input_ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1
        )
        seq = _Sequence(
            request_id=request_id,
            emit=emit,
            params=params,
            prompt_tokens=len(ids),
            cancelled=cancelled,
            length=len(ids),
        )
        copied = copy_token_ids(tokenizer, params) - self._stop_ids
        if copied:
            seq.biased = torch.tensor(sorted(copied), dtype=torch.long)
            seq.copy_ids = copy_text_ids(tokenizer, params)
        next_ids = self._choose(out.logits[:, -1, :], [seq])
        return seq, (cache, mask, next_ids)

    def _decode_step(self, active: list[_Sequence], state):
        import torch

        cache, mask, next_ids = state
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype)], dim=1)
        positions = torch.tensor([[seq.length] for seq in active], dtype=torch.long)
        out = self.loaded.model(
            input_ids=next_ids.unsqueeze(1),
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        for seq in active:
            seq.length += 1
        return cache, mask, self._choose(out.logits[:, -1, :], active)

    def _choose(self, logits, seqs: list[_Sequence]):
        import torch

        logits = logits.float()
        for row, seq in enumerate(seqs):
            if seq.biased is not None and not copy_used_up(seq.copy_ids, seq.generated):
                logits[row, seq.biased] += seq.params.copy_bias
                follow = copy_follow_ids(seq.copy_ids, seq.generated)
                if follow:
                    ids = torch.tensor(sorted(follow), dtype=torch.long)
                    logits[row, ids] += seq.params.copy_follow_bias
            penalty = seq.params.repetition_penalty
            if penalty != 1.0 and seq.generated:
                seen = torch.tensor(sorted(set(seq.generated)), dtype=torch.long)
                scores = logits[row, seen]
                logits[row, seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
        chosen = logits.argmax(dim=-1)
        for row, seq in enumerate(seqs):
            if seq.params.temperature > 0:
                probs = torch.softmax(logits[row] / seq.params.temperature, dim=-1)
                chosen[row] = torch.multinomial(probs, 1)[0]
        return chosen

    def _advance(self, seq: _Sequence, token) -> bool:
        """Record the chosen token, stream new text; False once the sequence is finished."""
        token = int(token)
        if seq.cancelled.is_set():
            seq.send(Event("done", token_count=len(seq.generated), truncated=True))
            return False
        if token in self._stop_ids:
            self._finish(seq, truncated=False)
            return False
        seq.generated.append(token)
        text = self.loaded.tokenizer.decode(seq.generated, skip_special_tokens=True)
        # Hold back an incomplete multi-byte character until its next byte arrives.
        if text.startswith(seq.emitted) and not text.endswith("\ufffd"):
            piece = text[len(seq.emitted) :]
            if piece:
                seq.emitted = text
                seq.send(Event("token", text=piece))
        if len(seq.generated) >= seq.params.max_new_tokens:
            self._finish(seq, truncated=True)
            return False
        return True

    def _finish(self, seq: _Sequence, *, truncated: bool) -> None:
        text = self.loaded.tokenizer.decode(seq.generated, skip_special_tokens=True)
        if text.startswith(seq.emitted) and len(text) > len(seq.emitted):
            seq.send(Event("token", text=text[len(seq.emitted) :].rstrip("\ufffd")))
        seq.send(
            Event(
                "done",
                token_count=len(seq.generated),
                truncated=truncated,
                prompt_tokens=seq.prompt_tokens,
            )
        )


def _layer_tensors(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def _merge(state, joining):
    """Stack a freshly prefilled sequence onto the running batch, left-padding the shorter."""
    import torch
    import torch.nn.functional as F

    cache, mask, next_ids = state
    new_cache, new_mask, new_next = joining
    width = max(mask.shape[1], new_mask.shape[1])

    def pad(t, dim_len, dim):
        missing = width - dim_len
        if missing == 0:
            return t
        pads = [0, 0] * (t.dim() - dim - 1) + [missing, 0]
        return F.pad(t, pads)

    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat(
            [pad(layer.keys, mask.shape[1], 2), pad(new_layer.keys, new_mask.shape[1], 2)]
        )
        layer.values = torch.cat(
            [pad(layer.values, mask.shape[1], 2), pad(new_layer.values, new_mask.shape[1], 2)]
        )
    mask = torch.cat([pad(mask, mask.shape[1], 1), pad(new_mask, new_mask.shape[1], 1)])
    return cache, mask, torch.cat([next_ids, new_next])


def _select(state, keep: list[int]):
    """Keep only the rows in `keep`, dropping columns that are padding for every row left."""
    import torch

    cache, mask, next_ids = state
    index = torch.tensor(keep, dtype=torch.long)
    mask = mask[index]
    real = mask.any(dim=0).nonzero()
    start = int(real[0]) if len(real) else 0
    for layer in cache.layers:
        layer.keys = layer.keys[index, :, start:, :]
        layer.values = layer.values[index, :, start:, :]
    return cache, mask[:, start:], next_ids[index]


def engine_timing_probe(engine: Engine, messages: list[dict], params: GenerationParams) -> dict:
    """Run one chat synchronously and time it (used by checks and benchmarks)."""
    done = threading.Event()
    result: dict[str, Any] = {"text": "", "first": None}
    start = time.perf_counter()

    def emit(event: Event) -> None:
        if event.kind == "token":
            if result["first"] is None:
                result["first"] = time.perf_counter() - start
            result["text"] += event.text
        else:
            result["event"] = event
            done.set()

    engine.submit(messages, params, emit)
    done.wait()
    result["total"] = time.perf_counter() - start
    return result
