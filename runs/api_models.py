"""API tokens and run callbacks: the rows behind the HTTP API.

Invariants:
- a token's secret is never stored, only its SHA-256; the token is shown once, when it is
  made (``ApiToken.mint``), and checked with a constant-time comparison;
- a token is scoped to one team, and acts with its user's role in that team *at the moment of
  each request* (``runs.permissions.can``), so a role change or a revocation takes effect at
  once;
- ``last_used_at`` is written at most once a minute per token, so using a token does not cost
  a write per request;
- a token is revoked at most once, and minting or revoking it on a person's behalf (console,
  admin) is an event in its team's audit chain, in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from runs.audit import Event

__all__ = ["ApiToken", "RunCallback"]

TOKEN_PREFIX = "ao"
LAST_USED_EVERY = timedelta(minutes=1)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A personal API token: ``ao_<prefix>_<secret>``; the prefix finds it, the secret proves it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=16, unique=True, help_text="Shown to tell tokens apart; not a secret."
    )
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 of the secret part.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}_{self.prefix}_… ({self.name or self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def mint(cls, *, user: Any, team: Any, name: str = "", actor: str = "") -> tuple[ApiToken, str]:
        """Create a token; returns it and its full text, which is never available again.

        With ``actor`` (who minted it), the minting is recorded as a ``token.created`` event.
        """
        for _ in range(5):
            prefix = secrets.token_hex(4)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        secret = secrets.token_urlsafe(32)
        with transaction.atomic():
            token = cls.objects.create(
                user=user, team=team, name=name, prefix=prefix, secret_hash=_hash(secret)
            )
            if actor:
                token.record("token.created", actor=actor, actor_user_id=user.pk)
        return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"

    def record(self, kind: str, *, actor: str, actor_user_id: int | None) -> None:
        """Append ``kind`` about this token to its team's audit chain (never the secret)."""
        Event.append(
            kind,
            team_id=self.team_id,
            chain=f"team:{self.team.slug}",
            actor=actor,
            actor_user_id=actor_user_id,
            data={"prefix": self.prefix, "name": self.name, "user": self.user.get_username()},
        )

    @classmethod
    def authenticate(cls, text: str) -> ApiToken | None:
        """The active token ``text`` stands for, with its user and team loaded; else None."""
        parts = text.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
            return None
        token = (
            cls.objects.select_related("user", "team")
            .filter(prefix=parts[1], revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            return None
        if not hmac.compare_digest(token.secret_hash, _hash(parts[2])):
            return None
        return token

    def touch(self, *, now: Any = None) -> None:
        """Record a use, at most once a minute (a read-only request should not always write)."""
        now = now or timezone.now()
        if self.last_used_at and now - self.last_used_at < LAST_USED_EVERY:
            return
        type(self).objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self, *, actor: str = "", actor_user_id: int | None = None) -> bool:
        """Revoke the token now; False if it already was. With ``actor``, recorded as a
        ``token.revoked`` event (only by the call that revoked it)."""
        now = timezone.now()
        with transaction.atomic():
            done = bool(
                type(self)
                .objects.filter(pk=self.pk, revoked_at__isnull=True)
                .update(revoked_at=now)
            )
            if done and actor:
                self.record("token.revoked", actor=actor, actor_user_id=actor_user_id)
        if done:
            self.revoked_at = now
        else:
            self.refresh_from_db(fields=["revoked_at"])
        return done


class RunCallback(models.Model):
    """Where the run's milestones are POSTed (validated when it is stored, and again at each
    delivery: see runs/deliveries.py)."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="callback")
    url = models.URLField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.run_id} → {self.url}"
