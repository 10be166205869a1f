"""Live updates of the approvals inbox: "the requests of team T changed".

As for runs (``runs.live``), a message carries only the team's id: each open inbox re-reads
and renders what its own user may decide, so a push never shows what its receiver may not
see, and a lost push loses nothing (the inbox also polls). It is sent after commit.
"""

from __future__ import annotations

from typing import Any

from runs.live import publish_group

MESSAGE_TYPE = "approvals.changed"


def inbox_group(team_id: Any) -> str:
    return f"approvals-team-{team_id}"


def publish_inbox_changed(team_id: int) -> None:
    """Announce, once the current transaction commits, that team ``team_id``'s requests changed."""
    publish_group(inbox_group(team_id), {"type": MESSAGE_TYPE, "team_id": team_id})
