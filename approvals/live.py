"""Live updates of the approvals inbox: "the requests of team T changed".

As for runs (``runs.live``), a message carries only the team's id: each open inbox re-reads
and renders what its own user may decide, so a push never shows what its receiver may not
see, and a lost push loses nothing (the inbox also polls). It is sent after commit, on the
same loop as the runs' pushes.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from django.db import transaction

from runs.live import publisher

log = logging.getLogger(__name__)
MESSAGE_TYPE = "approvals.changed"


def inbox_group(team_id: Any) -> str:
    return f"approvals-team-{team_id}"


def _submit(team_id: int) -> None:
    loop = publisher.loop()
    if loop is None:
        return

    def schedule() -> None:
        task = asyncio.get_running_loop().create_task(_deliver(team_id))
        publisher._tasks.add(task)
        task.add_done_callback(publisher._tasks.discard)

    try:
        loop.call_soon_threadsafe(schedule)
    except RuntimeError:  # the loop closed meanwhile: nobody listens there any more
        pass


async def _deliver(team_id: int) -> None:
    from channels.layers import get_channel_layer

    try:
        await get_channel_layer().group_send(
            inbox_group(team_id), {"type": MESSAGE_TYPE, "team_id": team_id}
        )
    except Exception:  # best effort: the inbox polls when it misses one
        log.warning("inbox update of team %s not sent", team_id, exc_info=True)


def publish_inbox_changed(team_id: int) -> None:
    """Announce, once the current transaction commits, that team ``team_id``'s requests changed."""
    if publisher.loop() is None:
        return
    transaction.on_commit(partial(_submit, team_id))
