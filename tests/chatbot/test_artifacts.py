"""The artifact store: content-addressed files behind Django's storage API, verified copies."""

from pathlib import Path

import pytest

from chatbot.artifacts import (
    ArtifactError,
    ArtifactMissing,
    artifact_manifest,
    artifact_pull,
    artifact_push,
)
from chatbot.serving.versions import ServingTarget, artifact_name, target_fetched


@pytest.fixture
def shared(settings, tmp_path):
    """A store directory and this host's cache, both fresh."""
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    return tmp_path / "store"


def folder_make(path: Path, files: dict[str, bytes]) -> Path:
    for name, body in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(body)
    return path


def blobs(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob("*") if p.is_file()]


def test_a_folder_round_trips_through_the_store(shared, tmp_path):
    source = folder_make(
        tmp_path / "v2", {"adapter_config.json": b"{}", "sub/weights.bin": b"w" * 5000}
    )
    (source / ".partial-marker").write_text("skipped")
    manifest = artifact_push(source, name="models/v2")
    assert set(manifest.files) == {"adapter_config.json", "sub/weights.bin"}
    local = artifact_pull("models/v2")
    assert local.name == manifest.digest and local.parent == Path(shared.parent / "cache")
    assert (local / "sub" / "weights.bin").read_bytes() == b"w" * 5000
    assert not (local / ".partial-marker").exists()
    # Cached: a second pull transfers nothing (it works with the blobs gone).
    for blob in blobs(shared):
        blob.unlink()
    assert artifact_pull("models/v2") == local


def test_same_content_is_stored_once(shared, tmp_path):
    first = folder_make(tmp_path / "a", {"model.gguf": b"x" * 100, "a.json": b"1"})
    second = folder_make(tmp_path / "b", {"model.gguf": b"x" * 100, "b.json": b"2"})
    one = artifact_push(first, name="models/v3")
    two = artifact_push(second, name="models/v4")
    assert len(blobs(shared)) == 3
    assert one.digest != two.digest
    again = artifact_push(first, name="knowledge/index")  # same content, another name
    assert again.digest == one.digest and len(blobs(shared)) == 3


def test_a_corrupt_blob_is_refused_and_never_cached(shared, tmp_path):
    source = folder_make(tmp_path / "v5", {"weights.bin": b"good" * 1000})
    manifest = artifact_push(source, name="models/v5")
    sha = manifest.files["weights.bin"]["sha256"]
    (shared / "blobs" / "sha256" / sha[:2] / sha).write_bytes(b"evil" * 1000)
    with pytest.raises(ArtifactError, match="checksum"):
        artifact_pull("models/v5")
    cache = shared.parent / "cache"
    assert not (cache / manifest.digest).exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".pull-")]


def test_missing_artifacts_and_bad_names(shared):
    with pytest.raises(ArtifactMissing):
        artifact_pull("models/v99")
    assert artifact_manifest("models/v99") is None
    for bad in ("../etc/passwd", "/abs", ""):
        with pytest.raises(ValueError):
            artifact_manifest(bad)


def test_a_version_is_served_from_the_store_when_it_has_it(shared, tmp_path):
    recorded = folder_make(tmp_path / "trainer-disk" / "v6", {"adapter_config.json": b"{}"})
    target = ServingTarget(6, 6, str(recorded), str(tmp_path / "base"))
    assert target_fetched(target) == target  # not in the store: the recorded folder
    artifact_push(recorded, name=artifact_name(6))
    fetched = target_fetched(target)
    assert Path(fetched.artifact_path).parent == shared.parent / "cache"
    assert (Path(fetched.artifact_path) / "adapter_config.json").exists()
    base = ServingTarget(1, 1, str(tmp_path / "base"), str(tmp_path / "base"))
    assert target_fetched(base) == base  # the base model is every host's own


def test_a_knowledge_index_synced_on_one_host_reaches_another(shared, settings, tmp_path):
    from chatbot.knowledge.artifact import index_publish, index_refresh

    settings.KNOWLEDGE_INDEX_REFRESH_SECONDS = 0
    worker = folder_make(tmp_path / "worker", {"index.npz": b"new index"}) / "index.npz"
    web = folder_make(tmp_path / "web", {"index.npz": b"old index"}) / "index.npz"
    assert not index_refresh(web)  # nothing in the store yet: keep what this host has
    index_publish(worker)
    assert index_refresh(web)
    assert web.read_bytes() == b"new index"
    assert not index_refresh(web)  # already the store's copy
    settings.KNOWLEDGE_INDEX_REFRESH_SECONDS = 60
    worker.write_bytes(b"newer index")
    index_publish(worker)
    assert not index_refresh(web)  # checked a moment ago: not again yet
