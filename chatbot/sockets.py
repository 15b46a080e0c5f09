"""What every socket of the app shares: JSON frames in and out, error frames, and relaying
the ready-made frames that services publish to channel-layer groups (see chatbot.live)."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings


class JsonFrameConsumer(AsyncWebsocketConsumer):
    """Parses each incoming text frame; subclasses implement `frame_received(frame, kind)`."""

    async def receive(self, text_data=None, bytes_data=None):
        size = len(text_data if text_data is not None else bytes_data or b"")
        if size > settings.CHAT_MAX_FRAME_BYTES:
            # Refused before parsing: a huge frame costs the event loop nothing.
            await self.error(
                "frame_too_large",
                f"The frame is {size} characters; the limit is {settings.CHAT_MAX_FRAME_BYTES}.",
            )
            return
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self.error("bad_frame", 'Send a JSON object with a "type" field.')
            return
        await self.frame_received(frame, frame["type"])

    async def frame_received(self, frame: dict, kind: str) -> None:
        raise NotImplementedError

    async def unknown_type(self, kind: str) -> None:
        await self.error("unknown_type", f"Unknown frame type {kind[:40]!r}.")

    async def frame_send(self, event):
        """Relay a frame published to a group this socket joined."""
        await self.send_json(event["frame"])

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def error(self, code: str, detail: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, **extra})
