import pytest
from django.conf import settings

from training.models import ModelVersion, VersionEvent
from training.registry import (
    RegistryError,
    base_version_ensure,
    version_create,
    version_promote,
    version_reject,
    version_rollback,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def adapter_dir(tmp_path, tiny_model):
    """A real LoRA adapter over the tiny model (promotion test-loads what it promotes)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    return folder


def candidate(adapter_dir, parent=None):
    version = version_create(
        parent=parent or base_version_ensure(),
        artifact_path=str(adapter_dir),
        base_path=str(settings.CHAT_BASE_MODEL_PATH),
        created_by="test",
    )
    version.status = ModelVersion.Status.CANDIDATE
    version.save()
    return version


def active_numbers():
    return list(ModelVersion.objects.filter(status="active").values_list("number", flat=True))


def test_empty_registry_gets_the_base_model_as_v1():
    v1 = base_version_ensure()
    assert (v1.number, v1.status, v1.artifact_path) == (1, "active", "")
    assert base_version_ensure().pk == v1.pk


def test_promote_retires_the_old_active_version_atomically(adapter_dir):
    v2 = candidate(adapter_dir)
    version_promote(version_id=v2.pk, actor="alice", reason="better")
    assert active_numbers() == [2]
    assert ModelVersion.objects.get(number=1).status == "retired"
    event = VersionEvent.objects.filter(version=v2).first()
    assert (event.action, event.actor, event.reason) == ("promoted", "alice", "better")


def test_rejected_version_needs_an_override_which_is_audited(adapter_dir):
    v2 = candidate(adapter_dir)
    version_reject(version_id=v2.pk, actor="gate", reason="worse")
    with pytest.raises(RegistryError, match="override"):
        version_promote(version_id=v2.pk, actor="bob", reason="trust me")
    assert active_numbers() == [1]
    version_promote(version_id=v2.pk, actor="bob", reason="manual check ok", override=True)
    assert active_numbers() == [2]
    assert VersionEvent.objects.filter(version=v2, action="overridden", actor="bob").exists()


def test_corrupt_artifact_is_refused_and_the_active_version_kept(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")  # no weights
    v2 = candidate(broken)
    with pytest.raises(RegistryError, match="cannot be served"):
        version_promote(version_id=v2.pk, actor="alice", reason="x")
    assert active_numbers() == [1]


def test_weights_that_will_not_load_fail_the_test_load_and_are_never_promoted(adapter_dir):
    # Every file the quick check looks at is there; the weights are garbage. Only loading
    # the model in a fresh process finds out, before anything is committed.
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    v2 = candidate(adapter_dir)
    with pytest.raises(RegistryError, match="a test load failed"):
        version_promote(version_id=v2.pk, actor="alice", reason="x")
    assert active_numbers() == [1]
    v2.refresh_from_db()
    assert v2.status == "candidate"
    assert not VersionEvent.objects.filter(version=v2, action="promoted").exists()


def test_rollback_restores_the_previous_version(adapter_dir):
    v2 = candidate(adapter_dir)
    version_promote(version_id=v2.pk, actor="gate", reason="better")
    v3 = candidate(adapter_dir, parent=v2)
    version_promote(version_id=v3.pk, actor="gate", reason="better again")
    restored = version_rollback(actor="carol", reason="complaints")
    assert restored.number == 2 and active_numbers() == [2]
    v3.refresh_from_db()
    assert v3.status == "retired" and "rolled back to v2" in v3.status_reason
    assert VersionEvent.objects.filter(version=v3, action="rolled_back", actor="carol").exists()
    assert version_rollback(actor="carol", reason="again").number in (1, 3)


def test_rollback_with_nothing_earlier_is_refused():
    base_version_ensure()
    with pytest.raises(RegistryError, match="no earlier version"):
        version_rollback(actor="x", reason="y")


def test_version_numbers_increase(adapter_dir):
    numbers = [candidate(adapter_dir).number for _ in range(3)]
    assert numbers == [2, 3, 4]
