"""The chat side serves a fine-tuned artifact (LoRA adapter merged onto the base)."""

import pytest
from channels.db import database_sync_to_async

from chatbot.models import Message
from chatbot.serving import gateway
from tests.helpers import frames_until
from training.data.snapshot import dataset_build
from training.models import ModelVersion
from training.registry import active_version, version_create, version_promote
from training.train import finetune

pytestmark = pytest.mark.django_db(transaction=True)


async def test_fine_tuned_version_answers_customers(
    tiny_model, data_dir, seed_corpus, tiny_cfg, tmp_path, chat_socket, customer_session
):
    tiny_cfg.max_steps = 3

    def train_and_activate():
        dataset_build(cfg=tiny_cfg, name="serve")
        result = finetune(
            tiny_cfg, snapshot_id="serve", base_path=tiny_model, output_dir=tmp_path / "adapter"
        )
        candidate = version_create(
            parent=active_version(),
            artifact_path=result.artifact_path,
            base_path=str(tiny_model),
            data_snapshot="serve",
            created_by="test",
            status=ModelVersion.Status.CANDIDATE,
        )
        return version_promote(version_id=candidate.pk, actor="test", reason="trained")

    version = await database_sync_to_async(train_and_activate)()
    try:
        ws = await chat_socket(customer_session)
        await ws.receive_json_from(timeout=10)
        await ws.send_json_to({"type": "customer_message", "text": "Where is my parcel?"})
        frames = await frames_until(ws, "bot_message", timeout=60)
        stored = await database_sync_to_async(Message.objects.get)(pk=frames[-1]["message_id"])
        assert stored.model_version_id == version.pk
        assert stored.text == frames[-1]["text"]
    finally:
        gateway.engines_shutdown()
