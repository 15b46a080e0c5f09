"""What trains: reviewed text only, corrections weighted/paraphrased/never deduplicated, and
a frozen evaluation set that no snapshot ever trains on."""

import dataclasses
import json
from pathlib import Path

import pytest

from feedback import services
from tests.helpers import conversation_make
from training.data.paraphrase import (
    PROMPT_VERSION,
    _cache_path,
    paraphrases_filter,
    paraphrases_generate,
)
from training.data.snapshot import (
    correction_paraphrases_prepare,
    dataset_build,
    snapshot_rows,
    stable_fraction,
)
from training.models import SeedExample

pytestmark = pytest.mark.django_db

RETURNS = "You can return any item within 60 days; we pay the return label."
JACKET = "How long do I have to return a jacket?"
JACKET_PARAPHRASES = [
    "How many days do I have to send a jacket back?",
    "Until when can I return a jacket I bought?",
    "What is the time limit for returning a jacket?",
    "How much time do I get to return a jacket?",
    "Is there a deadline to return a jacket?",
    "When is it too late to return a jacket?",
    "zx qq blorp vv?",  # what a confused model writes: dropped by similarity
    "Bananas are yellow and tasty?",
]


@pytest.fixture
def agent(db):
    from feedback.agents import agent_create

    return agent_create(username="alice", password="s3cret-Agent-pass")


def conversation(turns, *, key="c"):
    return conversation_make(turns, session_key=key)[1]


def corrected(agent, question, answer, *, key):
    _, bot = conversation([("customer", question), ("bot", "I am not sure.")], key=key)
    return services.correction_submit(message_id=bot.id, agent=agent, text=answer)


def rows(snapshot):
    return {split: snapshot_rows(snapshot, split) for split in ("train", "validation", "eval")}


def user_texts(split_rows):
    return {r["messages"][0]["content"] for r in split_rows}


def test_eval_set_is_frozen_disjoint_and_independent_of_seed_and_additions(
    data_dir, seed_corpus, tiny_cfg, agent
):
    cfg = dataclasses.replace(tiny_cfg, eval_seed_share=0.3, paraphrases_per_correction=0)
    first = rows(dataset_build(cfg=cfg, name="a"))
    eval_ids = {c["id"] for c in first["eval"]}
    assert eval_ids and all(c["kind"] == "seed" for c in first["eval"])
    case = first["eval"][0]
    assert case["prompt"][-1]["role"] == "user" and case["expected"]
    trained = {r["id"] for r in first["train"] + first["validation"]}
    assert not eval_ids & trained
    assert len(eval_ids | trained) == 36  # every seed row is somewhere (no near-duplicates)
    validation_conversations = {r["conversation_id"] for r in first["validation"]}
    assert validation_conversations
    assert not validation_conversations & {r["conversation_id"] for r in first["train"]}

    # More seed rows, a corrected conversation and a liked reply arrive; another seed.
    SeedExample.objects.bulk_create(
        SeedExample(
            source="more",
            external_id=str(i),
            customer=f"Do you sell size {i} shoes?",
            agent=f"Yes, size {i} is in stock.",
        )
        for i in range(30)
    )
    corrected(agent, JACKET, RETURNS, key="k1")
    _, liked = conversation([("customer", "Hi there"), ("bot", "Hello! How can I help?")], key="k2")
    services.customer_message_rate(
        conversation_id=liked.conversation_id, message_id=liked.id, value="up"
    )
    second = rows(dataset_build(cfg=dataclasses.replace(cfg, seed=7), name="b"))
    second_eval = {c["id"] for c in second["eval"]}
    assert {i for i in second_eval if i.startswith("seed:test:")} == eval_ids
    assert second_eval - eval_ids  # some new seed rows joined the evaluation set
    assert not second_eval & {r["id"] for r in second["train"] + second["validation"]}
    assert validation_conversations <= {r["conversation_id"] for r in second["validation"]}
    sources = {r["source"] for r in second["train"]}
    assert "correction" in sources and "thumbs_up" not in sources

    third = rows(dataset_build(cfg=dataclasses.replace(cfg, include_thumbs_up=True), name="c"))
    assert "thumbs_up" in {r["source"] for r in third["train"] + third["validation"]}


def test_near_copies_of_evaluation_rows_never_train(data_dir, seed_corpus, tiny_cfg):
    """Each fixture question is asked three ways with one answer: near copies of each other
    (word 3-shingle Jaccard 0.7-0.93). An evaluation row wins its group: the other wordings
    leave training."""
    cfg = dataclasses.replace(
        tiny_cfg, eval_seed_share=0.3, near_duplicate_threshold=0.6, paraphrases_per_correction=0
    )
    snapshot = dataset_build(cfg=cfg, name="guard")
    split = rows(snapshot)
    drawn = {f"seed:test:{s.external_id}" for s in seed_corpus}
    drawn = {i for i in drawn if stable_fraction(i, "eval") < cfg.eval_seed_share}
    assert {c["id"] for c in split["eval"]} == drawn  # evaluation rows are never dropped
    eval_answers = {c["expected"] for c in split["eval"]}
    trained = split["train"] + split["validation"]
    assert eval_answers and trained
    assert not eval_answers & {r["messages"][-1]["content"] for r in trained}
    # Every question is still somewhere: in evaluation, or once in training.
    trained_answers = [r["messages"][-1]["content"] for r in trained]
    assert len(eval_answers | set(trained_answers)) == 12
    assert len(trained_answers) == len(set(trained_answers))
    assert snapshot.report["dropped"]["near_duplicate"] == 36 - len(split["eval"]) - len(trained)


def test_corrections_sharing_one_answer_all_train_weighted_never_deduplicated(
    data_dir, seed_corpus, tiny_cfg, agent
):
    cfg = dataclasses.replace(
        tiny_cfg, near_duplicate_threshold=0.95, paraphrases_per_correction=0, correction_weight=4
    )
    items = ["shoes", "jacket", "scarf", "hat", "bag"]
    for i in range(20):
        question = f"Can I return the {items[i % 5]} I bought {i + 2} days ago?"
        corrected(agent, question, RETURNS, key=f"k{i}")
    snapshot = dataset_build(cfg=cfg, name="corr")
    split = rows(snapshot)
    corrections = [r for r in split["train"] if r["source"] == "correction"]
    assert len(corrections) == 20
    assert {r["weight"] for r in corrections} == {4}
    assert all(r["correction_id"] and r["messages"][1]["content"] == RETURNS for r in corrections)
    assert len({r["key"] for r in corrections}) == 20
    assert not [r for r in split["validation"] if r["source"] == "correction"]
    assert {r["weight"] for r in split["train"] if r["source"] == "seed"} == {1}
    report = snapshot.report
    assert report["split"]["train_weighted"] == report["split"]["train"] + 20 * 3
    # The same 20 single exchanges as conversation examples are duplicates of the rows above.
    assert report["dropped_by_source"]["duplicate"] == {"correction": 20}


def test_corpus_answers_a_correction_overrides_neither_train_nor_judge(
    data_dir, seed_corpus, tiny_cfg, agent
):
    """The corpus says "thirty days"; the shop's agents say 60. The corpus rows asking that
    question leave training and the evaluation set; the others stay."""
    # Supersede alone: the nearest questions (next test) would take these rows as cases.
    cfg = dataclasses.replace(
        tiny_cfg, eval_seed_share=0.5, paraphrases_per_correction=0, nearest_min_similarity=0
    )
    before = rows(dataset_build(cfg=cfg, name="before"))
    policy_rows = {
        r["id"]
        for split in ("train", "validation")
        for r in before[split]
        if "return policy" in r["messages"][0]["content"]
    } | {c["id"] for c in before["eval"] if "return policy" in c["prompt"][-1]["content"]}
    assert len(policy_rows) == 3

    corrected(agent, "What's your returns policy?", RETURNS, key="k1")
    snapshot = dataset_build(cfg=cfg, name="after")
    after = rows(snapshot)
    ids = {r["id"] for split in ("train", "validation") for r in after[split]}
    eval_ids = {c["id"] for c in after["eval"]}
    assert not policy_rows & (ids | eval_ids)
    seed_before = {r["id"] for split in before.values() for r in split} - policy_rows
    assert seed_before <= ids | eval_ids  # nothing else left
    superseded = snapshot.report["superseded"]
    assert superseded["seed_rows"] == 3
    assert superseded["eval_cases"] == len(policy_rows & {c["id"] for c in before["eval"]})
    assert [r["messages"][1]["content"] for r in after["train"] if r["source"] == "correction"] == [
        RETURNS
    ]

    off = rows(dataset_build(cfg=dataclasses.replace(cfg, supersede_min_similarity=0), name="off"))
    assert policy_rows <= {r["id"] for split in off.values() for r in split}


def test_corpus_questions_nearest_a_correction_train_with_its_answer(
    data_dir, seed_corpus, tiny_cfg, agent
):
    """Real customers' wordings of a corrected question: the corpus rows asking it train (or
    are held out) with the agents' answer instead of leaving training, and never keep their
    old one. A question not clearly nearer one correction than another is left out."""
    cfg = dataclasses.replace(
        tiny_cfg,
        eval_seed_share=0.2,
        paraphrases_per_correction=0,
        nearest_min_similarity=0.65,
        nearest_eval_share=0.34,
    )
    refunds = "Refunds reach your card within 5 business days."
    corrected(agent, "What's your returns policy?", RETURNS, key="k1")  # corpus rows: 0.92-0.95
    corrected(agent, "What is your refund policy?", refunds, key="k2")  # the same rows: 0.74-0.79

    def nearest(cfg, name):
        split = rows(dataset_build(cfg=cfg, name=name))
        trained = [r for r in split["train"] if r["source"] == "correction_nearest"]
        held_out = [c for c in split["eval"] if c["id"].startswith("nearest:")]
        asked = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in trained}
        return split, trained, asked | {c["prompt"][0]["content"]: c["expected"] for c in held_out}

    split, trained, asked = nearest(cfg, "nearest")
    policy = {p + "What is your return policy?" for p in ("", "Hello, ", "Quick question: ")}
    # "Hello, I want a refund for my purchase." is 0.62 to the refund question: too far.
    refund = {p + "I want a refund for my purchase." for p in ("", "Quick question: ")}
    assert asked == dict.fromkeys(policy, RETURNS) | dict.fromkeys(refund, refunds)
    assert trained and {r["weight"] for r in trained} == {cfg.paraphrase_weight}
    # None of them trains or is judged with the corpus's old answer any more.
    seed_left = [r for r in split["train"] + split["validation"] if r["source"] == "seed"]
    assert not (policy | refund) & user_texts(seed_left)
    seed_cases = {c["prompt"][-1]["content"] for c in split["eval"] if c["kind"] == "seed"}
    assert not (policy | refund) & seed_cases

    # The return-policy rows are 0.16-0.19 nearer the returns question than the refund one;
    # the refund rows 0.22-0.23 nearer theirs: a 0.2 margin keeps only the refund rows.
    _, _, asked = nearest(dataclasses.replace(cfg, nearest_margin=0.2), "margin")
    assert asked == dict.fromkeys(refund, refunds)

    # All held out: every one judges the gate as a correction case, none trains.
    split, trained, asked = nearest(dataclasses.replace(cfg, nearest_eval_share=1), "eval-only")
    assert not trained and asked == dict.fromkeys(policy, RETURNS) | dict.fromkeys(refund, refunds)
    assert not (policy | refund) & user_texts(split["train"] + split["validation"])


def test_correction_paraphrases_train_or_are_held_out_never_both(
    data_dir, seed_corpus, tiny_cfg, agent, tiny_model, monkeypatch
):
    cfg = dataclasses.replace(tiny_cfg, paraphrases_per_correction=len(JACKET_PARAPHRASES))
    correction = corrected(agent, JACKET, RETURNS, key="k1")
    # Paraphrases come from the on-disk cache (as on every rebuild): no model is loaded.
    path = _cache_path(Path(tiny_model), JACKET)
    path.parent.mkdir(parents=True)
    record = {"question": JACKET, "count": cfg.paraphrases_per_correction, "seed": cfg.seed}
    record.update(prompt_version=PROMPT_VERSION, candidates=JACKET_PARAPHRASES)
    path.write_text(json.dumps(record))
    monkeypatch.setattr("chatbot.serving.loading.model_load", lambda *a, **k: 1 / 0)

    snapshot = dataset_build(cfg=cfg, name="para")
    split = rows(snapshot)
    trained = [r for r in split["train"] if r["source"] == "correction_paraphrase"]
    held_out = [c for c in split["eval"] if c["kind"] == "correction"]
    assert trained and held_out
    assert all(r["messages"][1]["content"] == RETURNS for r in trained)
    assert {r["weight"] for r in trained} == {cfg.paraphrase_weight}
    assert {r["correction_id"] for r in trained} == {correction.id}
    assert {(c["expected"], c["correction_id"]) for c in held_out} == {(RETURNS, correction.id)}
    assert len({c["topic"] for c in held_out}) == 1
    prompts = {c["prompt"][0]["content"] for c in held_out}
    assert not prompts & user_texts(split["train"] + split["validation"])
    assert len(prompts) + len(trained) == 6  # the two garbage candidates are gone
    assert snapshot.report["paraphrases"] == {
        "questions": 1,
        "generated": 0,  # all from the cache
        "candidates": 8,
        "fit": 6,
        "train": len(trained),
        "eval": len(held_out),
    }
    [single] = [r for r in split["train"] if r["source"] == "correction"]
    assert single["messages"] == [
        {"role": "user", "content": JACKET},
        {"role": "assistant", "content": RETURNS},
    ]


def test_tiny_model_paraphrases_are_cached_and_its_garbage_filtered(
    data_dir, tiny_model, monkeypatch
):
    raw, generated = paraphrases_generate([JACKET], count=3, seed=1, model_path=Path(tiny_model))
    assert len(raw[JACKET]) == 3 and generated == 1
    assert _cache_path(Path(tiny_model), JACKET).exists()
    monkeypatch.setattr("chatbot.serving.loading.model_load", lambda *a, **k: 1 / 0)
    again = paraphrases_generate([JACKET], count=3, seed=1, model_path=Path(tiny_model))
    assert again == (raw, 0)
    assert paraphrases_filter(JACKET, raw[JACKET], min_similarity=0.82, max_similarity=0.985) == []
    kept = paraphrases_filter(
        JACKET,
        [JACKET, "how long do I have to return a jacket", *JACKET_PARAPHRASES[:2], "zx qq?"],
        min_similarity=0.82,
        max_similarity=0.985,
    )
    assert [text for text, _ in kept] == JACKET_PARAPHRASES[:2]


def test_paraphrases_written_when_a_correction_is_saved_spare_the_build(
    data_dir, seed_corpus, tiny_cfg, agent, tiny_model, monkeypatch
):
    # The trainer's task for a saved correction: this conversation's question only.
    correction = corrected(agent, JACKET, RETURNS, key="k1")
    corrected(agent, "Do you ship to Norway?", "Yes, in 5 days.", key="k2")
    ahead = correction_paraphrases_prepare(
        cfg=tiny_cfg, conversation_id=str(correction.message.conversation_id)
    )
    assert (ahead["questions"], ahead["generated"]) == (1, 1)
    assert _cache_path(Path(tiny_model), JACKET).exists()
    again = correction_paraphrases_prepare(
        cfg=tiny_cfg, conversation_id=str(correction.message.conversation_id)
    )
    assert (again["questions"], again["generated"]) == (1, 0)

    # The build generates only what was not written ahead (the other conversation's).
    build = dataset_build(cfg=tiny_cfg, name="ahead").report["paraphrases"]
    assert (build["questions"], build["generated"]) == (2, 1)


def test_damaged_caches_and_a_missing_paraphrase_model_do_not_stop_the_build(
    data_dir, seed_corpus, tiny_cfg, agent, settings, tmp_path
):
    from training.data.embed import texts_embed_cached

    texts = ["Where is my parcel?", "Can I return shoes?"]
    first = texts_embed_cached(texts)
    [cache] = (data_dir / "cache").glob("embeddings-*.npz")
    cache.write_bytes(b"not a numpy file")
    assert abs(texts_embed_cached(texts) - first).max() < 1e-5

    settings.CHAT_BASE_MODEL_PATH = str(tmp_path / "no-such-model")
    corrected(agent, JACKET, RETURNS, key="k1")
    snapshot = dataset_build(cfg=tiny_cfg, name="nomodel")
    assert "no-such-model" in snapshot.report["paraphrases"]["error"]
    assert [r["source"] for r in rows(snapshot)["train"]].count("correction") == 1
