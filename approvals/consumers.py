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

from approvals.inbox import render_inbox_list
from approvals.live import inbox_group
from runs.consumers import LiveConsumer, active_user
from runs.permissions import DECIDE, teams_for

#: The list re-renders at most this often (four times a second), however much changes.
INTERVAL = 0.25


def _deciding_team_ids(user: Any) -> set[int]:
    return set(teams_for(user, DECIDE).values_list("pk", flat=True))


def _inbox_for(user_id: int, query: str) -> tuple[set[int], str | None]:
    """The person's deciding teams and their inbox list, both from the person read afresh
    (deactivated since the socket opened: no teams, no list)."""
    user = active_user(user_id)
    teams = _deciding_team_ids(user) if user is not None else set()
    return teams, (render_inbox_list(user, query) if teams else None)


class InboxConsumer(LiveConsumer):
    """Pushes ``#inbox-list`` and the nav badge when requests of the person's teams change."""

    push_interval = INTERVAL

    async def connect(self) -> None:
        self.reset_live()
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close()
            return
        team_ids = await database_sync_to_async(_deciding_team_ids)(user)
        if not team_ids:
            await self.close()
            return
        self.user_id: int = user.pk
        self.query = self.scope.get("query_string", b"").decode("latin-1")
        await self.follow({inbox_group(t) for t in team_ids})
        await self.accept()
        await self.push()

    async def approvals_changed(self, event: dict[str, Any]) -> None:
        self.schedule_push()

    async def push(self) -> None:
        self._last = asyncio.get_running_loop().time()
        team_ids, html = await database_sync_to_async(_inbox_for)(self.user_id, self.query)
        if html is None:
            await self.close()
            return
        await self.follow({inbox_group(t) for t in team_ids})
        await self.send(text_data=html)
