"""The knowledge index shared through the artifact store.

Whichever process syncs the index (the worker after an article changes, usually) pushes
the file to the store as `knowledge/index`; every other host checks the store at most every
KNOWLEDGE_INDEX_REFRESH_SECONDS and installs a newer index, verified, over its own file.
Without that a web host on another machine would keep the index it built at start. The
database stays the truth: `index_sync` still rebuilds from the stored vectors when needed.
"""

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from django.conf import settings

from chatbot.artifacts import ArtifactError, artifact_manifest, artifact_pull, artifact_push

log = logging.getLogger(__name__)

INDEX_ARTIFACT = "knowledge/index"
_lock = threading.Lock()
_installed: dict[str, str] = {}  # local index path -> digest of the store copy it matches
_checked_at: dict[str, float] = {}


def _digest_of(path: Path) -> str:
    from chatbot.artifacts import file_sha256, manifest_digest

    return manifest_digest({path.name: {"sha256": file_sha256(path)}})


def index_publish(path: Path) -> None:
    """Push this host's freshly written index; a store outage only delays the others."""
    try:
        manifest = artifact_push(path, name=INDEX_ARTIFACT)
    except Exception:  # noqa: BLE001 - other hosts keep their index until the next push
        log.warning("Could not publish the knowledge index to the artifact store", exc_info=True)
        return
    with _lock:
        _installed[str(path)] = manifest.digest


def index_refresh(path: Path) -> bool:
    """Install the store's index over `path` when it differs from what this host has
    (checked at most every KNOWLEDGE_INDEX_REFRESH_SECONDS). True when replaced."""
    key = str(path)
    now = time.monotonic()
    with _lock:
        if now - _checked_at.get(key, -1e9) < settings.KNOWLEDGE_INDEX_REFRESH_SECONDS:
            return False
        _checked_at[key] = now
    try:
        manifest = artifact_manifest(INDEX_ARTIFACT)
        if manifest is None or len(manifest.files) != 1:
            return False
        if key not in _installed and path.exists():
            _installed[key] = _digest_of(path)
        if _installed.get(key) == manifest.digest:
            return False
        folder = artifact_pull(INDEX_ARTIFACT)
    except (ArtifactError, OSError, ValueError):
        log.warning("Could not refresh the knowledge index from the store", exc_info=True)
        return False
    source = next(folder.iterdir())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.pulled")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
    with _lock:
        _installed[key] = manifest.digest
    log.info("Knowledge index updated from the store (%s)", manifest.digest[:12])
    return True
