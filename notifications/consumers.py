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

from notifications.bell import render_bell
from notifications.live import user_group
from runs.consumers import LiveConsumer, active_user

#: The bell re-renders at most this often (four times a second), however much arrives.
INTERVAL = 0.25


def _bell_for_active(user_id: int) -> str | None:
    """The bell of ``user_id``, or None once they are deactivated (or deleted)."""
    user = active_user(user_id)
    return render_bell(user) if user is not None else None


class BellConsumer(LiveConsumer):
    """Pushes ``#notifications-bell`` (out of band) to one person."""

    push_interval = INTERVAL

    async def connect(self) -> None:
        self.reset_live()
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            await self.close()
            return
        self.user_id = user.pk
        await self.join(user_group(user.pk))
        await self.accept()
        await self.push()

    async def notifications_changed(self, event: dict[str, Any]) -> None:
        self.schedule_push()

    async def push(self) -> None:
        self._last = asyncio.get_running_loop().time()
        html = await database_sync_to_async(_bell_for_active)(self.user_id)
        if html is None:
            await self.close()
            return
        await self.send(text_data=html)
