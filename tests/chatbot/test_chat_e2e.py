"""End to end with the real default model (SmolLM2-135M-Instruct)."""

import pytest
from channels.db import database_sync_to_async

from chatbot.models import Message
from tests.helpers import frames_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_real_model_streams_a_reply_that_is_stored(
    settings, real_model_dir, chat_socket, customer_session
):
    settings.CHAT_BASE_MODEL_PATH = str(real_model_dir)
    settings.SERVING_MAX_NEW_TOKENS = 32
    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": "How do I return an item?"})
    frames = await frames_until(ws, "bot_message", timeout=120)
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) >= 5
    final = frames[-1]
    assert "".join(tokens) == final["text"]
    stored = await database_sync_to_async(Message.objects.get)(pk=final["message_id"])
    assert stored.text == final["text"]
    assert stored.token_count > 5
    # A real instruction-tuned model answers in words, not noise.
    assert len(set(stored.text.lower().split()) & {"return", "item", "order", "you", "the"}) >= 2
