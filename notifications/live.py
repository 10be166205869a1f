"""Live updates of a person's bell: "your in-app notifications changed", after commit.

As for runs (``runs.live``), the message carries nothing but its type: the consumer re-reads
the count for its own user.
"""

from __future__ import annotations

from runs.live import publish_group

MESSAGE_TYPE = "notifications.changed"


def user_group(user_id: int) -> str:
    return f"notify-user-{user_id}"


def publish_bell(user_id: int) -> None:
    """Announce, once the current transaction commits, that ``user_id``'s bell changed."""
    publish_group(user_group(user_id), {"type": MESSAGE_TYPE})
