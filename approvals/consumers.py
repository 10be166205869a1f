"""The inbox's WebSocket: the list of the requests its person may decide, kept current.

Authenticated by the session and origin-checked like the runs' sockets (``runs.consumers``).
It listens to ``inbox_group(team)`` of every team in which its person may decide; a message
says only "team T's requests changed", and the consumer re-reads and renders the list (with
the filters of its query string) for its own person, so a push never shows what they may not
see. Who may decide is read again before every push: a person whose last deciding team is
taken away is disconnected, and the groups follow their teams.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from approvals.inbox import render_inbox_list
from approvals.live import inbox_group
from runs import live
from runs.permissions import DECIDE, teams_for

#: The list re-renders at most this often (four times a second), however much changes.
INTERVAL = 0.25


def _deciding_team_ids(user: Any) -> set[int]:
    return set(teams_for(user, DECIDE).values_list("pk", flat=True))


class InboxConsumer(AsyncWebsocketConsumer):
    """Pushes ``#inbox-list`` and the nav badge when requests of the person's teams change."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self._due: asyncio.Task[None] | None = None
        self._last = 0.0
        self._listening = False
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close()
            return
        team_ids = await database_sync_to_async(_deciding_team_ids)(user)
        if not team_ids:
            await self.close()
            return
        self.query = self.scope.get("query_string", b"").decode("latin-1")
        await self._follow(team_ids)
        live.publisher.listening(asyncio.get_running_loop())
        self._listening = True
        await self.accept()
        await self.push()

    async def _follow(self, team_ids: set[int]) -> None:
        """Join the groups of ``team_ids`` and leave the others."""
        wanted = {inbox_group(t) for t in team_ids}
        for group in wanted - set(self.groups_joined):
            await self.channel_layer.group_add(group, self.channel_name)
        for group in set(self.groups_joined) - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = sorted(wanted)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_due", None) is not None:
            self._due.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []
        if getattr(self, "_listening", False):
            live.publisher.stopped_listening()
            self._listening = False

    async def approvals_changed(self, event: dict[str, Any]) -> None:
        if self._due is not None and not self._due.done():
            return  # a push is already due; it will show this change too
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + INTERVAL - loop.time())
        self._due = loop.create_task(self._push_after(delay))

    async def _push_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.push()

    async def push(self) -> None:
        self._last = asyncio.get_running_loop().time()
        user = self.scope.get("user")
        team_ids = await database_sync_to_async(_deciding_team_ids)(user)
        if not team_ids:
            await self.close()
            return
        await self._follow(team_ids)
        html = await database_sync_to_async(render_inbox_list)(user, self.query)
        await self.send(text_data=html)
