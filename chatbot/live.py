"""Pushing live events to everyone watching a conversation (customer tabs, agents).

Every group message has the type "frame.send" and carries a ready-to-send JSON frame, so
each consumer needs a single handler (`frame_send`) to relay it.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

# Every agent console joins this group to hear about every conversation.
AGENTS_GROUP = "agents"


def conversation_group(conversation_id) -> str:
    return f"conversation.{getattr(conversation_id, 'hex', conversation_id)}"


async def frame_publish(group: str, frame: dict) -> None:
    await get_channel_layer().group_send(group, {"type": "frame.send", "frame": frame})


def frame_publish_on_commit(group: str, frame: dict) -> None:
    """Publish once the surrounding transaction commits (never for a rolled-back write). A
    channel-layer error is logged: the write stands, and shows on the next page load."""
    transaction.on_commit(lambda: async_to_sync(frame_publish)(group, frame), robust=True)
