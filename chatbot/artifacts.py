"""The artifact store: model versions, dataset snapshots and the knowledge index, shared by
every host through Django's storage API (the STORAGES alias "artifacts").

Layout in the store:
  blobs/sha256/<2 hex>/<sha256>   file contents, addressed by their hash, written once
  <name>.json                     a manifest: {"name", "digest", "files": {path: {sha256, size}}}
where <name> is e.g. `models/v7`, `datasets/run-20260101-...` or `knowledge/index`, and
`digest` is the hash of the sorted file list (the artifact's content hash).

A host pulls an artifact into its own cache (ARTIFACT_CACHE_DIR/<digest>/), verifying every
file's SHA-256 as it arrives; a finished copy is renamed into place, so a half-written one
is never used, and one already cached costs no transfer. The default backend is a
FileSystemStorage on ARTIFACT_STORE_DIR (a shared directory: NFS or similar on several
hosts); S3-compatible object storage works through django-storages (README "Scaling out").
"""

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artifact is missing from the store or failed its checksum."""


class ArtifactMissing(ArtifactError):
    """The store has no artifact of that name."""


@dataclass(frozen=True)
class Manifest:
    name: str
    digest: str
    files: dict[str, dict]
    source: str = ""  # where it was pushed from (the trainer's folder), for the record


def store() -> Storage:
    return storages["artifacts"]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _blob_name(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def _manifest_name(name: str) -> str:
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"bad artifact name {name!r}")
    return f"{name}.json"


def manifest_digest(files: dict[str, dict]) -> str:
    listing = json.dumps({p: f["sha256"] for p, f in sorted(files.items())}, sort_keys=True)
    return hashlib.sha256(listing.encode()).hexdigest()


def artifact_push(source: Path, *, name: str) -> Manifest:
    """Store a file or a folder (every file under it, hidden ones skipped) as `name`.

    Blobs already in the store are not sent again; the manifest is written last, so a
    reader sees the whole artifact or none of it. Pushing the same name again replaces it
    (used for the knowledge index; model versions are pushed once).
    """
    backend = store()
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    files: dict[str, dict] = {}
    for path in paths:
        relative = path.name if source.is_file() else path.relative_to(source).as_posix()
        if any(part.startswith(".") for part in Path(relative).parts):
            continue
        sha = file_sha256(path)
        files[relative] = {"sha256": sha, "size": path.stat().st_size}
        blob = _blob_name(sha)
        if not backend.exists(blob):
            with open(path, "rb") as handle:
                backend.save(blob, File(handle))
    manifest = Manifest(name, manifest_digest(files), files, source=str(source))
    body = json.dumps(
        {"name": name, "digest": manifest.digest, "files": files, "source": manifest.source},
        indent=1,
    )
    target = _manifest_name(name)
    if backend.exists(target):
        backend.delete(target)
    backend.save(target, ContentFile(body.encode()))
    log.info("Stored %s (%s files, digest %s)", name, len(files), manifest.digest[:12])
    return manifest


def artifact_manifest(name: str) -> Manifest | None:
    backend = store()
    target = _manifest_name(name)
    if not backend.exists(target):
        return None
    with backend.open(target, "rb") as handle:
        data = json.loads(handle.read())
    return Manifest(data["name"], data["digest"], data["files"], data.get("source", ""))


def artifact_pull(name: str, *, source: str = "") -> Path:
    """The artifact as a local folder in this host's cache, fetched and verified if needed.

    Raises ArtifactMissing when the store does not have it (or, with `source`, has one
    pushed from elsewhere: a stale entry from another database), ArtifactError when a
    file's checksum differs (the partial copy is discarded; nothing half-verified is used).
    """
    manifest = artifact_manifest(name)
    if manifest is None or (source and manifest.source != source):
        raise ArtifactMissing(f"{name} is not in the artifact store")
    if manifest.digest != manifest_digest(manifest.files):
        raise ArtifactError(f"{name}: the manifest does not match its own digest")
    cache = Path(settings.ARTIFACT_CACHE_DIR)
    folder = cache / manifest.digest
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    backend = store()
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pull-") as tmp:
        for relative, meta in manifest.files.items():
            out = Path(tmp) / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with backend.open(_blob_name(meta["sha256"]), "rb") as src, open(out, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != meta["sha256"]:
                raise ArtifactError(f"{name}/{relative}: checksum mismatch, not used")
        try:
            Path(tmp).rename(folder)
        except OSError:
            if not folder.is_dir():  # not a concurrent pull that finished first
                raise
    log.info("Fetched %s into %s", name, folder)
    return folder


def _manifest_names(folder: str = "") -> list[str]:
    backend = store()
    dirs, files = backend.listdir(folder)
    found = [f"{folder}{name}" for name in files if name.endswith(".json")]
    for sub in dirs:
        if not (folder == "" and sub == "blobs"):
            found += _manifest_names(f"{folder}{sub}/")
    return found


def artifact_rewrite(name: str, rewrite: Callable[[Path], int]) -> int:
    """Change a stored artifact in place, for deleting customer data: `rewrite` edits a
    working copy and returns how much it changed; when it changed anything, the new
    version replaces the old one, and the old files' blobs that no other artifact uses are
    deleted from the store, as is this host's cached copy. Returns what `rewrite` returned
    (0 when the store has no such artifact)."""
    old = artifact_manifest(name)
    if old is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="rewrite-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(artifact_pull(name), work)
        changed = rewrite(work)
        if not changed:
            return 0
        new = artifact_push(work, name=name)
    used = {meta["sha256"] for meta in new.files.values()}
    backend = store()
    for other in _manifest_names():
        if other != _manifest_name(name):
            with backend.open(other, "rb") as handle:
                used |= {f["sha256"] for f in json.loads(handle.read()).get("files", {}).values()}
    for meta in old.files.values():
        if meta["sha256"] not in used:
            backend.delete(_blob_name(meta["sha256"]))
    shutil.rmtree(Path(settings.ARTIFACT_CACHE_DIR) / old.digest, ignore_errors=True)
    return changed
