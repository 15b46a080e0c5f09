"""Reading and seeding the model-version registry, and its transitions (promote, reject,
roll back). Serving reads it through `active_version`, `version_get` and
`load_failure_rollback` (this module is what training/apps.py connects as
chatbot.serving.versions.VersionRegistry)."""

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from training.models import ModelVersion

log = logging.getLogger(__name__)


def active_version() -> ModelVersion | None:
    """The version in service (a read). Never None once migrated: see `base_version_ensure`."""
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def version_get(version_id: int) -> ModelVersion | None:
    """A version by primary key (a read), for serving a version beside the active one."""
    return ModelVersion.objects.filter(pk=version_id).first()


def base_version_ensure() -> ModelVersion:
    """Return the active version, registering the configured base model as v1 if the
    registry is empty. An empty artifact_path means "the configured base model".

    Run after every `migrate` (and test flush: training/apps.py), so serving only reads."""
    active = active_version()
    if active:
        return active
    try:
        with transaction.atomic():
            version, _ = ModelVersion.objects.get_or_create(
                number=1,
                defaults={
                    "status": ModelVersion.Status.ACTIVE,
                    "artifact_path": "",
                    "created_by": "system",
                    "status_reason": "base model",
                    "activated_at": timezone.now(),
                },
            )
    except IntegrityError:
        version = ModelVersion.objects.get(number=1)
    return active_version() or version


class RegistryError(Exception):
    """A registry transition that is not allowed; the message says why."""


def _event(version: ModelVersion, action: str, actor: str, reason: str) -> None:
    from training.models import VersionEvent

    VersionEvent.objects.create(version=version, action=action, actor=actor, reason=reason)


@transaction.atomic
def version_create(
    *,
    parent: ModelVersion | None,
    artifact_path: str = "",
    base_path: str = "",
    data_snapshot: str = "",
    config: dict | None = None,
    created_by: str,
    status: str = ModelVersion.Status.TRAINING,
) -> ModelVersion:
    """Register a new version numbered after the highest so far."""
    base_version_ensure()
    last = ModelVersion.objects.select_for_update().order_by("-number").first()
    version = ModelVersion.objects.create(
        number=(last.number if last else 0) + 1,
        status=status,
        parent=parent,
        artifact_path=artifact_path,
        base_path=base_path,
        data_snapshot=data_snapshot,
        config=config or {},
        created_by=created_by,
    )
    _event(version, "registered", created_by, f"status {status}")
    return version


def _servable_check(version: ModelVersion) -> None:
    from chatbot.artifacts import ArtifactError
    from chatbot.serving.loading import ModelLoadError, artifact_check
    from chatbot.serving.versions import artifact_local

    if not version.artifact_path:
        return  # the configured base model
    try:
        # This host's verified copy from the artifact store when it has the version.
        artifact_check(artifact_local(version.number, version.artifact_path))
    except (ModelLoadError, ArtifactError) as exc:
        raise RegistryError(f"v{version.number} cannot be served: {exc}") from exc


def _test_load(version: ModelVersion) -> None:
    """Load the version in a fresh process and generate a few tokens (PROMOTION_TEST_LOAD),
    so a checkpoint whose files look right but will not load is never promoted."""
    from django.conf import settings

    from chatbot.serving.smoke import SmokeTestFailed, smoke_test

    if not version.artifact_path or not settings.PROMOTION_TEST_LOAD:
        return
    _servable_check(version)
    from chatbot.serving.versions import serving_target, target_fetched

    local = target_fetched(serving_target(version))  # this host's copy (artifact store)
    try:
        smoke_test(local.artifact_path, base_path=local.base_path)
    except SmokeTestFailed as exc:
        raise RegistryError(
            f"v{version.number} cannot be served: a test load failed: {exc}"
        ) from exc


def version_promote(
    *, version_id: int, actor: str, reason: str, override: bool = False
) -> ModelVersion:
    """Make a candidate (or, by admin override, a rejected version) the active one.

    The version is first loaded in a separate process and made to write a few tokens
    (seconds; outside the transaction). Then, atomically, the old active version is retired
    in the same transaction, so exactly one version is active at every moment. New replies
    use the new version from the next message on; replies already streaming finish on the
    old one.
    """
    version = ModelVersion.objects.get(pk=version_id)
    _promotable_check(version, override=override)
    _test_load(version)
    return _promote(version_id=version_id, actor=actor, reason=reason, override=override)


def _promotable_check(version: ModelVersion, *, override: bool) -> None:
    allowed = {ModelVersion.Status.CANDIDATE}
    if override:
        allowed |= {ModelVersion.Status.REJECTED, ModelVersion.Status.RETIRED}
    if version.status not in allowed:
        raise RegistryError(
            f"v{version.number} is {version.status}; only "
            f"{' or '.join(sorted(allowed))} versions can be promoted"
            + ("" if override else " (an admin override can promote a rejected one)")
        )


@transaction.atomic
def _promote(*, version_id: int, actor: str, reason: str, override: bool) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    _promotable_check(version, override=override)  # again: it may have changed meanwhile
    _servable_check(version)
    _activate(version)
    _event(version, "overridden" if override else "promoted", actor, reason)
    return version


def _activate(version: ModelVersion) -> None:
    from chatbot.serving.cluster import active_version_broadcast

    for old in ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE):
        old.status = ModelVersion.Status.RETIRED
        old.status_reason = f"replaced by v{version.number}"
        old.save(update_fields=["status", "status_reason"])
    version.status = ModelVersion.Status.ACTIVE
    version.activated_at = timezone.now()
    version.save(update_fields=["status", "activated_at"])
    # Every model server hears of it once it is true in the database (README "Scaling out").
    transaction.on_commit(lambda: active_version_broadcast(version.pk), robust=True)


@transaction.atomic
def version_reject(*, version_id: int, actor: str, reason: str) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.status not in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.TRAINING):
        raise RegistryError(f"v{version.number} is {version.status}; it cannot be rejected")
    version.status = ModelVersion.Status.REJECTED
    version.status_reason = reason
    version.save(update_fields=["status", "status_reason"])
    _event(version, "rejected", actor, reason)
    return version


@transaction.atomic
def version_rollback(*, actor: str, reason: str, to_version_id: int | None = None) -> ModelVersion:
    """Put an earlier version back in service: the one named, else the most recently
    active retired version. The version rolled back from is retired with the reason."""
    active = (
        ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
    )
    target: ModelVersion | None
    if to_version_id is not None:
        target = ModelVersion.objects.select_for_update().get(pk=to_version_id)
    else:
        target = (
            ModelVersion.objects.select_for_update()
            .filter(status=ModelVersion.Status.RETIRED, activated_at__isnull=False)
            .order_by("-activated_at")
            .first()
        )
    if target is None or (active and target.pk == active.pk):
        raise RegistryError("There is no earlier version to roll back to.")
    if target.status not in (ModelVersion.Status.RETIRED, ModelVersion.Status.CANDIDATE):
        raise RegistryError(f"v{target.number} is {target.status}; it cannot be restored")
    _servable_check(target)
    _activate(target)
    if active:
        active.status_reason = f"rolled back to v{target.number}: {reason}"
        active.save(update_fields=["status_reason"])
        _event(active, "rolled_back", actor, f"to v{target.number}: {reason}")
    _event(target, "promoted", actor, f"rollback: {reason}")
    return target


def load_failure_rollback(*, version_id: int, error: str) -> bool:
    """Version `version_id` failed to load in serving: put the version before it back in
    service (the gateway still holds its engine), recording why. True when a retry makes
    sense (rolled back now, or already by a concurrent reply); False when there is nothing
    earlier to serve."""
    with transaction.atomic():
        active = (
            ModelVersion.objects.select_for_update()
            .filter(status=ModelVersion.Status.ACTIVE)
            .first()
        )
        if active is None or active.pk != version_id:
            return active is not None
        try:
            restored = version_rollback(
                actor="serving", reason=f"v{active.number} failed to load: {error}"
            )
        except RegistryError as exc:
            log.error("v%s failed to load and cannot be rolled back: %s", active.number, exc)
            return False
    log.error("v%s failed to load (%s); rolled back to v%s", active.number, error, restored.number)
    return True
