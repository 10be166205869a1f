"""The bell's WebSocket: the signed-in person's unread count, pushed when it changes.

Authenticated by the session and origin-checked like the runs' sockets (``runs.consumers``).
It listens to ``user_group(user.id)`` only, so a person hears of nobody else's messages; a
group message says only "your in-app messages changed" and the consumer re-counts for its own
person. On connect it sends the current bell at once, so a change between the page's render
and the socket's opening is not missed. A person who is no longer active is disconnected.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from notifications.bell import render_bell
from notifications.live import user_group
from runs import live

#: The bell re-renders at most this often (four times a second), however much arrives.
INTERVAL = 0.25


def _bell_for_active(user_id: int) -> str | None:
    """The bell of ``user_id``, or None once they are deactivated (or deleted)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return render_bell(user) if user is not None else None


class BellConsumer(AsyncWebsocketConsumer):
    """Pushes ``#notifications-bell`` (out of band) to one person."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self._due: asyncio.Task[None] | None = None
        self._last = 0.0
        self._listening = False
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            await self.close()
            return
        self.user_id = user.pk
        group = user_group(user.pk)
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)
        # With the in-memory layer, pushes are sent only while someone in this process listens.
        live.publisher.listening(asyncio.get_running_loop())
        self._listening = True
        await self.accept()
        await self.push()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_due", None) is not None:
            self._due.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []
        if getattr(self, "_listening", False):
            live.publisher.stopped_listening()
            self._listening = False

    async def notifications_changed(self, event: dict[str, Any]) -> None:
        if self._due is not None and not self._due.done():
            return  # a push is already due; it will count this change too
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + INTERVAL - loop.time())
        self._due = loop.create_task(self._push_after(delay))

    async def _push_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.push()

    async def push(self) -> None:
        self._last = asyncio.get_running_loop().time()
        html = await database_sync_to_async(_bell_for_active)(self.user_id)
        if html is None:
            await self.close()
            return
        await self.send(text_data=html)
