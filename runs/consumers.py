"""WebSocket consumers of the console: one per run page, one per runs list.

Both are authenticated by the session (``AuthMiddlewareStack``; the origin is checked by
``AllowedHostsOriginValidator``) and check, when connecting and again before every push, that
the user may see what they watch; otherwise the socket is closed. They send rendered HTML
partials whose root carries ``hx-swap-oob``, which htmx's ws extension swaps by DOM id.

A group message says only which run changed (see ``runs.live``); the consumer re-reads and
renders it for its own user. On connect each sends the current partial at once, so a change
between the page's render and the socket's opening is not missed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from runs import live
from runs.console import render_run_list, render_run_live
from runs.permissions import runs_visible_to, teams_for

#: A list re-renders at most this often, however many of its runs change.
LIST_INTERVAL = 1.0


def _user(scope: dict[str, Any]) -> Any:
    return scope.get("user")


def _may_view_run(user: Any, run_id: Any) -> bool:
    return runs_visible_to(user).filter(pk=run_id).exists()


def _team_ids(user: Any) -> list[int]:
    return list(teams_for(user).values_list("pk", flat=True))


class RunConsumer(AsyncWebsocketConsumer):
    """Pushes ``#run-live`` of one run whenever it changes."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        user = _user(self.scope)
        if not getattr(user, "is_authenticated", False) or not await database_sync_to_async(
            _may_view_run
        )(user, self.run_id):
            await self.close()
            return
        group = live.run_group(self.run_id)
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)
        live.publisher.listening(asyncio.get_running_loop())
        await self.accept()
        await self.push()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "groups_joined", None):
            live.publisher.stopped_listening()
            self.groups_joined = []

    async def run_changed(self, event: dict[str, Any]) -> None:
        await self.push()

    async def push(self) -> None:
        html = await database_sync_to_async(render_run_live)(_user(self.scope), self.run_id)
        if html is None:  # access was taken away (or the run is gone): stop watching
            await self.close()
            return
        await self.send(text_data=html)


class RunListConsumer(AsyncWebsocketConsumer):
    """Pushes ``#runs-table`` (with the filters of the socket's query string) when runs of
    the user's teams change, at most once every ``LIST_INTERVAL`` seconds."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self._due: asyncio.Task[None] | None = None
        self._last = 0.0
        user = _user(self.scope)
        if not getattr(user, "is_authenticated", False):
            await self.close()
            return
        team_ids = await database_sync_to_async(_team_ids)(user)
        if not team_ids:
            await self.close()
            return
        self.query = self.scope.get("query_string", b"").decode("latin-1")
        for team_id in team_ids:
            group = live.team_group(team_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        live.publisher.listening(asyncio.get_running_loop())
        await self.accept()
        await self.push()

    async def disconnect(self, code: int) -> None:
        if self._due is not None:
            self._due.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "groups_joined", None):
            live.publisher.stopped_listening()
            self.groups_joined = []

    async def run_changed(self, event: dict[str, Any]) -> None:
        if self._due is not None and not self._due.done():
            return  # a push is already due; it will show this change too
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + LIST_INTERVAL - loop.time())
        self._due = loop.create_task(self._push_after(delay))

    async def _push_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.push()

    async def push(self) -> None:
        self._last = asyncio.get_running_loop().time()
        user = _user(self.scope)
        if not await database_sync_to_async(_team_ids)(user):
            await self.close()
            return
        html = await database_sync_to_async(render_run_list)(user, self.query)
        await self.send(text_data=html)
