"""Prompt fitting, the engine's continuous batching, and checkpoint loading."""

import re
import threading
from dataclasses import replace

import pytest

from chatbot.prompting import chat_messages, prompt_fit
from chatbot.serving.engine import (
    Engine,
    GenerationParams,
    copy_follow_ids,
    copy_text_ids,
    copy_token_ids,
    copy_used_up,
    engine_timing_probe,
)
from chatbot.serving.loading import ModelLoadError, model_load


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    return model_load(tiny_model_dir)


def prompt_length(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids if isinstance(ids, list) else ids["input_ids"])


def test_history_is_cut_oldest_first_to_fit_the_context(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    history = []
    for i in range(40):
        history += [("customer", f"question number {i} about my order"), ("bot", f"answer {i}")]
    history.append(("customer", "and the last question?"))
    messages = chat_messages(history, system="You are a shop assistant.")
    fitted = prompt_fit(tokenizer, messages, budget=200)
    assert prompt_length(tokenizer, fitted) <= 200
    assert fitted[0] == messages[0]  # the system prompt stays
    assert fitted[-1]["content"] == "and the last question?"
    assert fitted[1]["role"] == "user"  # starts with the customer
    assert len(fitted) < len(messages)
    assert fitted[1:] == messages[-(len(fitted) - 1) :]  # a suffix of the conversation


def test_an_overlong_last_message_is_cut_to_fit(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    messages = chat_messages([("customer", "refund " * 500)], system="Be brief.")
    fitted = prompt_fit(tokenizer, messages, budget=120)
    assert prompt_length(tokenizer, fitted) <= 120


def test_continuous_batching_gives_the_same_greedy_text_as_one_at_a_time(tiny_loaded):
    engine = Engine(tiny_loaded, max_batch=8)
    params = GenerationParams(max_new_tokens=12, context_tokens=512)
    questions = [f"Where is parcel {i}? " * (i + 1) for i in range(6)]
    alone = [
        engine_timing_probe(engine, chat_messages([("customer", q)], system="Hi"), params)["text"]
        for q in questions
    ]
    together = [None] * len(questions)

    def ask(i):
        messages = chat_messages([("customer", questions[i])], system="Hi")
        together[i] = engine_timing_probe(engine, messages, params)["text"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine.stop()
    assert together == alone
    assert all(alone)


def test_missing_and_corrupt_checkpoints_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        model_load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not really weights")
    with pytest.raises(ModelLoadError, match="Could not load"):
        model_load(broken)


def test_models_loading_at_once_in_two_threads_keep_their_own_dtypes(tiny_model_dir, monkeypatch):
    """Server start loads the chat model (bf16) and the embedding model (float32) together."""
    import torch

    from chatbot.knowledge import embedding

    monkeypatch.setattr(embedding, "_model", None)
    results = {}
    threads = [
        threading.Thread(
            target=lambda: results.update(chat=model_load(tiny_model_dir, dtype="bfloat16"))
        ),
        threading.Thread(target=lambda: results.update(embed=embedding.embedding_model())),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {p.dtype for p in results["chat"].model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in results["embed"][1].parameters()} == {torch.float32}
    assert embedding.texts_embed(["hello"]).shape == (1, embedding.DIMENSION)


def test_the_model_servers_tokenizer_loads_under_the_one_model_load_lock(tiny_model_dir):
    """A web process in front of a model server loads its tokenizer in reply threads while
    another thread loads the embedding model: both go through transformers' lazy imports,
    which race (a bench's first question failed with "cannot import name 'AutoModel'"), so
    the tokenizer waits for the same lock as every model load."""
    from chatbot.serving import remote
    from chatbot.serving.loading import MODEL_LOAD_LOCK

    remote._tokenizer_load.cache_clear()
    loaded = threading.Event()
    with MODEL_LOAD_LOCK:
        thread = threading.Thread(
            target=lambda: (remote._tokenizer(str(tiny_model_dir)), loaded.set())
        )
        thread.start()
        assert not loaded.wait(0.5)  # held back while another load holds the lock
    assert loaded.wait(60)
    thread.join()


def test_an_internal_engine_error_fails_its_chats_and_the_engine_serves_on(
    tiny_loaded, monkeypatch
):
    from chatbot.serving import engine as engine_module

    engine = Engine(tiny_loaded, max_batch=4)
    params = GenerationParams(max_new_tokens=6, context_tokens=512)
    messages = chat_messages([("customer", "hello")], system="Hi")
    advance = Engine._advance
    calls = []

    def advance_failing_once(self, seq, token):  # fault injection: one bug in the loop
        calls.append(token)
        if len(calls) == 1:
            raise IndexError("injected")
        return advance(self, seq, token)

    monkeypatch.setattr(engine_module.Engine, "_advance", advance_failing_once)
    events, ended = [], threading.Event()

    def emit(event):
        events.append(event)
        if event.kind != "token":
            ended.set()

    engine.submit(messages, params, emit)
    assert ended.wait(10), "the chat hung after an internal engine error"
    assert events[-1].kind == "error" and "injected" in events[-1].text
    again = engine_timing_probe(engine, messages, params)
    assert again["event"].kind == "done" and again["text"]
    assert engine.alive
    engine.stop()


def test_fitting_a_long_conversation_tokenizes_it_a_few_times_not_once_per_turn(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    calls = []

    class CountingTokenizer:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            return tokenizer(*args, **kwargs)

        def apply_chat_template(self, *args, **kwargs):
            calls.append(1)
            return tokenizer.apply_chat_template(*args, **kwargs)

    history = []
    for i in range(300):
        history += [("customer", f"question {i} about parcel {i}"), ("bot", f"answer {i}")]
    history.append(("customer", "and now?"))
    messages = chat_messages(history, system="Be brief.")
    fitted = prompt_fit(CountingTokenizer(), messages, budget=200)
    assert len(calls) <= 15
    # The same turns as dropping the oldest one at a time would keep.
    turns = messages[1:]
    while len(turns) > 1 and prompt_length(tokenizer, messages[:1] + turns) > 200:
        turns = turns[1:]
    while turns[0]["role"] == "assistant":
        turns = turns[1:]
    assert fitted == messages[:1] + turns


def test_a_copy_bias_favours_the_tokens_of_the_copy_text(tiny_loaded):
    engine = Engine(tiny_loaded, max_batch=4)
    messages = chat_messages([("customer", "Where is my parcel?")], system="Hi")
    plain = GenerationParams(max_new_tokens=16, context_tokens=512)
    copy_text = "Delivery with GLS takes 3 to 5 days."
    biased = GenerationParams(
        max_new_tokens=16, context_tokens=512, copy_text=copy_text, copy_bias=100.0
    )
    without = engine_timing_probe(engine, messages, plain)["text"]
    with_bias = engine_timing_probe(engine, messages, biased)["text"]
    off = GenerationParams(max_new_tokens=16, context_tokens=512, copy_text=copy_text)
    unbiased = engine_timing_probe(engine, messages, off)["text"]
    engine.stop()
    tokenizer = tiny_loaded.tokenizer
    allowed = copy_token_ids(tokenizer, biased)
    assert allowed == set(tokenizer(copy_text, add_special_tokens=False)["input_ids"])
    # The tiny model's logits are far below a bias of 100: every token of the reply is one
    # of the copy text's, and without the bias (or with a bias of 0) it says something else.
    pieces = sorted({tokenizer.decode([t]) for t in allowed}, key=len, reverse=True)
    assert re.fullmatch("(?:" + "|".join(map(re.escape, pieces)) + ")+", with_bias)
    assert not re.fullmatch("(?:" + "|".join(map(re.escape, pieces)) + ")+", without)
    assert unbiased == without


def test_the_follow_bias_picks_the_tokens_that_continue_the_copy_text_in_order():
    copy = [10, 11, 12, 13, 11, 14]  # token 11 occurs twice, followed by 12 then by 14
    assert copy_follow_ids(copy, []) == {10}  # before the reply starts: its first token
    assert copy_follow_ids(copy, [5, 10]) == {11}
    assert copy_follow_ids(copy, [5, 11]) == {12, 14}  # a one-token tail: both places
    assert copy_follow_ids(copy, [10, 11]) == {12}  # the longer tail decides
    assert copy_follow_ids(copy, [13, 11]) == {14}
    assert copy_follow_ids(copy, [13, 11, 14]) == set()  # the copy text is used up
    assert copy_follow_ids(copy, [7, 8]) == set()  # the reply has left it
    assert copy_follow_ids([], [1]) == set()
    # Reaching the end by a short tail ends the copying too: "." closes the text and a
    # sentence in it, and the reply must not start the text's second sentence again.
    text = [1, 2, 9, 3, 4, 9]  # "A B. C D."
    assert copy_follow_ids(text, [1, 2, 9]) == {3}
    assert copy_follow_ids(text, [3, 4, 9]) == set()
    # A place whose next tokens the reply already said is not followed again.
    looped = [1, 2, 3, 4, 5, 1, 6]
    assert copy_follow_ids(looped, [1, 2, 3, 4, 5, 1]) == {6}
    assert copy_follow_ids(looped, [1, 2, 3, 4, 5, 7, 1]) == {6}
    # Once the reply holds the text's end, the answer has been given: no bias at all.
    assert not copy_used_up(copy, [10, 11, 12, 13, 11])
    assert copy_used_up(copy, [10, 11, 12, 13, 11, 14])
    assert copy_used_up(copy, [5, 12, 13, 11, 14, 8])
    assert not copy_used_up([], [1, 2])


def test_a_follow_bias_copies_the_text_in_its_order(tiny_loaded):
    """The plain copy bias favours the copy text's tokens as a bag; the follow bias makes the
    reply the copy text as written."""
    engine = Engine(tiny_loaded, max_batch=4)
    tokenizer = tiny_loaded.tokenizer
    messages = chat_messages([("customer", "Where is my parcel?")], system="Hi")
    copy_text = "Standard delivery takes 3 to 5 business days with GLS."
    bag = GenerationParams(context_tokens=512, copy_text=copy_text, copy_bias=1.0)
    ordered = GenerationParams(
        context_tokens=512, copy_text=copy_text, copy_bias=1.0, copy_follow_bias=100.0
    )
    size = len(copy_text_ids(tokenizer, ordered))
    ordered, bag = replace(ordered, max_new_tokens=size), replace(bag, max_new_tokens=size)
    followed = engine_timing_probe(engine, messages, ordered)["text"]
    bagged = engine_timing_probe(engine, messages, bag)["text"]
    engine.stop()
    assert copy_text_ids(tokenizer, bag) == []  # no follow bias: nothing to follow
    assert followed == copy_text
    assert bagged != copy_text
