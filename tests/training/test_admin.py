"""Training records in Django admin: version events, training runs and dataset snapshots (with
the rows each version was trained on), all view only."""

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from training import selectors
from training.data.snapshot import dataset_build, snapshot_rows
from training.models import DatasetSnapshot, SeedExample, TrainingRun, VersionEvent
from training.registry import base_version_ensure, version_create
from training.train import META_FILE

pytestmark = pytest.mark.django_db

SNAPSHOTS = "/admin/training/datasetsnapshot/"


@pytest.fixture
def trained(data_dir, seed_corpus, tiny_cfg, tmp_path):
    """Snapshot "old" (v2, a full run on it), then more data and snapshot "new", on which v3
    continued from v2's adapter (new rows + 3 replayed)."""
    old = dataset_build(cfg=tiny_cfg, name="old")
    adapter = tmp_path / "v2-adapter"
    adapter.mkdir()
    (adapter / META_FILE).write_text(json.dumps({"data_snapshot": "old"}))
    v2 = version_create(
        parent=base_version_ensure(),
        artifact_path=str(adapter),
        data_snapshot="old",
        config=tiny_cfg.to_dict(),
        created_by="alice",
    )
    SeedExample.objects.bulk_create(
        SeedExample(
            source="test",
            external_id=f"gift-{i}",
            customer=f"Do you wrap <b>gifts</b> for order {i} and colour {i * 7}?",
            agent=f"Yes, gift wrapping costs {i + 2} euros per parcel.",
        )
        for i in range(6)
    )
    new = dataset_build(cfg=tiny_cfg, name="new")
    config = {**tiny_cfg.to_dict(), "incremental": True, "replay_examples": 3}
    v3 = version_create(
        parent=v2, data_snapshot="new", config=config, created_by="alice", status="candidate"
    )
    return {"old": old, "new": new, "v2": v2, "v3": v3}


def test_the_rows_a_version_was_trained_on_are_chosen_as_its_run_chose_them(trained):
    rows, mix = selectors.version_training_rows(trained["v2"])
    assert mix["mode"] == "full"
    assert rows == snapshot_rows(trained["old"], "train")

    rows, mix = selectors.version_training_rows(trained["v3"])
    old_keys = {r["key"] for r in snapshot_rows(trained["old"], "train")}
    new_rows = [r for r in snapshot_rows(trained["new"], "train") if r["key"] not in old_keys]
    assert mix["mode"] == "incremental" and mix["replayed"] == 3
    assert mix["new"] == len(new_rows) > 0
    assert sorted(r["key"] for r in rows if r["key"] not in old_keys) == sorted(
        r["key"] for r in new_rows
    )
    assert sum(r["key"] in old_keys for r in rows) == 3


def test_snapshots_show_their_rows_and_the_versions_trained_on_them(admin_client, trained):
    page = admin_client.get(SNAPSHOTS).content.decode()
    new = trained["new"]
    assert "new" in page and "old" in page
    assert str(new.train_count + new.validation_count) in page
    assert "v3 (candidate)" in page and "v2 (training)" in page

    detail = admin_client.get(f"{SNAPSHOTS}{new.pk}/change/").content.decode()
    assert "v3 (candidate)" in detail and "v2 (training)" not in detail
    assert f"{SNAPSHOTS}{new.pk}/rows/?split=validation" in detail
    assert "Cleaning report" in detail

    rows = admin_client.get(f"{SNAPSHOTS}{new.pk}/rows/?split=train").content.decode()
    assert f"{new.train_count} rows" in rows
    assert "<b>gifts</b>" not in rows and "&lt;b&gt;gifts&lt;/b&gt;" in rows  # escaped

    found = admin_client.get(f"{SNAPSHOTS}{new.pk}/rows/?split=train&q=wrapping").content
    wanted = [r for r in snapshot_rows(new, "train") if "wrapping" in json.dumps(r).lower()]
    assert 0 < len(wanted) < new.train_count
    assert f"{len(wanted)} row".encode() in found

    trained_on = admin_client.get(f"{SNAPSHOTS}{new.pk}/rows/?version=3").content.decode()
    rows_v3, mix = selectors.version_training_rows(trained["v3"])
    assert f"{len(rows_v3)} rows" in trained_on
    assert f"{mix['new']} new since its parent" in trained_on
    # v2 was not trained on this snapshot; unknown splits and snapshots are 404s.
    assert admin_client.get(f"{SNAPSHOTS}{new.pk}/rows/?version=2").status_code == 404
    assert admin_client.get(f"{SNAPSHOTS}{new.pk}/rows/?split=secrets").status_code == 404
    assert admin_client.get(f"{SNAPSHOTS}999999/rows/").status_code == 404


def test_a_snapshot_whose_files_are_gone_says_so(admin_client, trained):
    snapshot = trained["old"]
    missing = Path(snapshot.path) / "train.jsonl"
    missing.unlink()
    page = admin_client.get(f"{SNAPSHOTS}{snapshot.pk}/rows/?split=train").content.decode()
    assert "is missing" in page and str(missing) in page


def test_runs_and_version_events_are_listed_with_their_versions(admin_client, trained):
    v3 = trained["v3"]
    run = TrainingRun.objects.create(
        status="succeeded",
        requested_by="alice",
        trigger="manual",
        candidate=v3,
        step=40,
        total_steps=40,
        loss_history=[{"step": 10, "loss": 2.5}],
        outcome="v3 rejected: no gain",
    )
    page = admin_client.get("/admin/training/trainingrun/").content.decode()
    assert "40/40" in page and "v3 (candidate)" in page
    detail = admin_client.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()
    assert f"{SNAPSHOTS}{trained['new'].pk}/rows/?version=3" in detail
    assert "v3 rejected: no gain" in detail

    from training.registry import version_reject

    version_reject(version_id=v3.pk, actor="bob", reason="no gain on <i>refunds</i>")
    events = admin_client.get("/admin/training/versionevent/").content.decode()
    assert "v3 (rejected)" in events and "bob" in events and "alice" in events
    assert "no gain on &lt;i&gt;refunds&lt;/i&gt;" in events
    rejected = admin_client.get("/admin/training/versionevent/?action=rejected")
    assert [e.actor for e in rejected.context["cl"].result_list] == ["bob"]


def test_training_records_are_view_only(admin_client, trained):
    snapshot, event = trained["new"], VersionEvent.objects.first()
    for url in (
        "/admin/training/datasetsnapshot/add/",
        "/admin/training/trainingrun/add/",
        "/admin/training/versionevent/add/",
        f"{SNAPSHOTS}{snapshot.pk}/delete/",
        f"/admin/training/versionevent/{event.pk}/delete/",
    ):
        assert admin_client.get(url).status_code == 403, url
    response = admin_client.post(f"{SNAPSHOTS}{snapshot.pk}/change/", {"name": "renamed"})
    assert response.status_code == 403
    assert DatasetSnapshot.objects.get(pk=snapshot.pk).name == "new"


def test_staff_need_the_view_permission(client, trained):
    snapshot = trained["new"]
    staff = User.objects.create_user("bob", password="pw-Bob-12345", is_staff=True)
    client.force_login(staff)
    assert client.get(f"{SNAPSHOTS}{snapshot.pk}/rows/").status_code == 403
    assert client.get(SNAPSHOTS).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_datasetsnapshot"))
    assert client.get(f"{SNAPSHOTS}{snapshot.pk}/rows/").status_code == 200
    client.logout()
    assert client.get(f"{SNAPSHOTS}{snapshot.pk}/rows/").status_code == 302  # to the login
