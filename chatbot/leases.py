"""Reply leases: which conversations some web process is answering right now.

A web process holds a lease in Redis for each reply it is generating and renews it every
third of CHAT_REPLY_LEASE_SECONDS. When the process dies its leases lapse, and the customer
message it was answering counts as orphaned: marked failed (and announced) by the next
socket that opens the conversation, by any web process starting, or by beat, on whichever
host. Without Redis (one process) nothing is leased and nothing here reports one live.
"""

import logging
from collections.abc import Iterable

from django.conf import settings

from chatbot.serving.cluster import redis_client

log = logging.getLogger(__name__)

LEASE_KEY = "chatbot:reply-lease:{}"


def leases_hold(conversation_ids: Iterable) -> None:
    client = redis_client()
    if client is None:
        return
    lease_ms = round(settings.CHAT_REPLY_LEASE_SECONDS * 1000)
    pipe = client.pipeline()
    for conversation_id in conversation_ids:
        pipe.set(LEASE_KEY.format(conversation_id), "1", px=lease_ms)
    pipe.execute()


def lease_release(conversation_id) -> None:
    client = redis_client()
    if client is not None:
        client.delete(LEASE_KEY.format(conversation_id))


def leases_live(conversation_ids: Iterable) -> set[str]:
    """The conversations among these that a live process is answering."""
    wanted = [str(c) for c in conversation_ids]
    client = redis_client()
    if client is None or not wanted:
        return set()
    found = client.mget([LEASE_KEY.format(c) for c in wanted])
    return {c for c, value in zip(wanted, found, strict=True) if value}
