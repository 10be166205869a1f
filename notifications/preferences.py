"""What a person wants to hear: their own choice, else a team default, else the defaults.

The defaults are milestones only (never every step): each event type by email and in-app for
the person's own runs (approval requests: for whoever may decide them); webhooks off until the
person registers one and turns it on.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from notifications.models import (
    Channel,
    EventType,
    NotificationSettings,
    Preference,
    Scope,
    TeamDefault,
    WebhookEndpoint,
)

__all__ = ["DEFAULTS", "Resolver", "effective", "save"]

FIELDS = ("enabled", "scope", "workflows", "digest_minutes")


def _default(event_type: str, channel: str) -> dict[str, Any]:
    return {
        "enabled": channel != Channel.WEBHOOK,
        "scope": Scope.MINE,
        "workflows": [],
        "digest_minutes": 0,
        "source": "default",
    }


DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    (t, c): _default(t, c) for t in EventType.values for c in Channel.values
}


def _row(obj: Any, source: str) -> dict[str, Any]:
    return {**{f: getattr(obj, f) for f in FIELDS}, "source": source}


class Resolver:
    """Preferences of many people at once (the fan-out asks for thousands per event burst)."""

    def __init__(self) -> None:
        self._users: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
        self._teams: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
        self._webhooks: dict[int, int | None] = {}
        self._team_endpoints: dict[int, list[int]] = {}
        #: Anything else worth computing once per burst (the fan-out's recipients).
        self.cache: dict[Any, Any] = {}

    def webhooks(self, user_ids: list[int]) -> dict[int, int]:
        """The enabled webhook endpoint of each of these people who has one."""
        missing = [u for u in user_ids if u not in self._webhooks]
        if missing:
            found = dict(
                NotificationSettings.objects.filter(
                    user_id__in=missing, webhook__isnull=False, webhook__enabled=True
                ).values_list("user_id", "webhook_id")
            )
            for uid in missing:
                self._webhooks[uid] = found.get(uid)
        return {u: w for u in user_ids if (w := self._webhooks[u]) is not None}

    def team_endpoints(self, team_id: int) -> list[int]:
        if team_id not in self._team_endpoints:
            self._team_endpoints[team_id] = list(
                WebhookEndpoint.objects.filter(team_id=team_id, enabled=True).values_list(
                    "pk", flat=True
                )
            )
        return self._team_endpoints[team_id]

    def load_users(self, user_ids: list[int]) -> None:
        missing = [u for u in user_ids if u not in self._users]
        for uid in missing:
            self._users[uid] = {}
        for pref in Preference.objects.filter(user_id__in=missing):
            self._users[pref.user_id][(pref.event_type, pref.channel)] = _row(pref, "yours")

    def _team(self, team_id: int) -> dict[tuple[str, str], dict[str, Any]]:
        if team_id not in self._teams:
            self._teams[team_id] = {
                (d.event_type, d.channel): _row(d, "team default")
                for d in TeamDefault.objects.filter(team_id=team_id)
            }
        return self._teams[team_id]

    def effective(
        self, user_id: int, event_type: str, channel: str, *, team_id: int | None = None
    ) -> dict[str, Any]:
        self.load_users([user_id])
        mine = self._users[user_id].get((event_type, channel))
        if mine is not None:
            return mine
        if team_id is not None:
            default = self._team(team_id).get((event_type, channel))
            if default is not None:
                return default
        return DEFAULTS[(event_type, channel)]

    def wide_scopes(self, team_id: int, event_type: str) -> bool:
        """Whether a team default reaches beyond the run's owner for this event type."""
        return any(
            row["enabled"] and row["scope"] != Scope.MINE
            for (t, _c), row in self._team(team_id).items()
            if t == event_type
        )


def effective(
    user: Any, event_type: str, channel: str, *, resolver: Resolver | None = None
) -> dict[str, Any]:
    """One person's effective choice, with where it comes from ("yours", "team default",
    "default"); the team default is that of the person's first team (by slug) that has one.
    A page asking for every choice passes one ``resolver``: each table is read once."""
    resolver = resolver or Resolver()
    mine = resolver.effective(user.pk, event_type, channel)
    if mine["source"] != "default":
        return mine
    key = ("teams by slug", user.pk)
    if key not in resolver.cache:
        resolver.cache[key] = list(user.teams.order_by("slug").values_list("pk", flat=True))
    for team_id in resolver.cache[key]:
        found = resolver.effective(user.pk, event_type, channel, team_id=team_id)
        if found["source"] != "default":
            return found
    return mine


def save(user: Any, rows: list[dict[str, Any]]) -> None:
    """Store a person's choices (one dict per event type and channel; validated by the form)."""
    with transaction.atomic():
        for row in rows:
            if row["event_type"] not in EventType.values or row["channel"] not in Channel.values:
                raise ValueError(f"unknown event type or channel: {row!r}")
            Preference.objects.update_or_create(
                user=user,
                event_type=row["event_type"],
                channel=row["channel"],
                defaults={f: row[f] for f in FIELDS if f in row},
            )
