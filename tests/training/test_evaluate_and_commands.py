import json

import pytest
from django.core.management import CommandError, call_command

from training.evaluate import evaluate_artifact, reports_table, safety_flags, token_f1
from training.models import DatasetSnapshot, SeedExample


def test_token_f1():
    assert token_f1("The parcel ships today.", "the parcel ships today") == 1.0
    assert token_f1("nothing alike", "completely different") == 0.0
    assert 0 < token_f1("ships today", "the parcel ships tomorrow") < 1


def test_safety_flags():
    prompt = "Where is order 88231? My mail is me@x.com"
    assert not any(
        safety_flags("Order 88231 ships today; we wrote to me@x.com.", prompt_text=prompt).values()
    )
    flags = safety_flags(
        "Your order #5567123 ships. Call +1 555-123-4567, see {{Order History}}, damn it.",
        prompt_text=prompt,
    )
    assert flags == {
        "toxic": True,
        "pii_leak": True,
        "raw_slot": True,
        "invented_order_number": True,
    }


def test_evaluate_base_model_report(tiny_model, data_dir, seed_corpus, tiny_cfg):
    from training.data.snapshot import dataset_build, snapshot_rows

    snapshot = dataset_build(cfg=tiny_cfg, name="eval")
    cases = snapshot_rows(snapshot, "validation")[:4]
    report = evaluate_artifact(tiny_model, base_path=tiny_model, cases=cases, max_new_tokens=4)
    data = report.to_dict()
    assert data["cases"] == 4 and data["perplexity"] > 1
    assert 0 <= data["rouge_l"] <= 1 and 0 <= data["token_f1"] <= 1
    assert -1 <= data["embedding_similarity"] <= 1
    assert set(data["safety"]) == {"toxic", "pii_leak", "raw_slot", "invented_order_number"}
    assert "validation loss" in reports_table([report, report])
    # Samples hold text in full: each names its case, so deleting a customer finds theirs.
    assert [(s["id"], s["correction_id"]) for s in data["samples"]] == [
        (str(c["id"]), c.get("correction_id")) for c in cases[:3]
    ]


def test_commands_import_build_train_evaluate(tiny_model, data_dir, tmp_path, db):
    rows = [
        {"id": f"r{i}", "customer": f"Question {w} about my order?", "agent": f"Answer {w}."}
        for i, w in enumerate(
            ["alpha", "refund", "parcel", "invoice", "password", "newsletter", "address", "payment"]
        )
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n{}\n")
    call_command("import_dataset", str(corpus))
    call_command("import_dataset", str(corpus))  # idempotent
    assert SeedExample.objects.count() == 8

    call_command("build_dataset", "--name", "cmd", "--validation-share", "0.25")
    snapshot = DatasetSnapshot.objects.get(name="cmd")
    assert snapshot.train_count + snapshot.validation_count == snapshot.report["rows_out"]

    artifact = tmp_path / "artifacts" / "cmd-run"
    call_command(
        "train",
        "--snapshot",
        "cmd",
        "--output",
        str(artifact),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--eval-steps",
        "1",
        "--bf16",
        "0",
    )
    assert (artifact / "adapter_config.json").exists()

    out = tmp_path / "report.json"
    call_command(
        "evaluate",
        "base",
        str(artifact),
        "--snapshot",
        "cmd",
        "--limit",
        "2",
        "--max-new-tokens",
        "2",
        "--json",
        str(out),
    )
    reports = json.loads(out.read_text())["reports"]
    assert len(reports) == 2 and reports[1]["artifact"] == str(artifact)

    with pytest.raises(CommandError, match="Refused"):
        call_command("evaluate", str(tmp_path / "missing"), "--snapshot", "cmd")
    with pytest.raises(CommandError, match="already exists"):
        call_command("train", "--snapshot", "cmd", "--output", str(artifact))


def test_build_dataset_with_nothing_fails_clearly(data_dir, db):
    with pytest.raises(CommandError, match="No usable examples"):
        call_command("build_dataset")
