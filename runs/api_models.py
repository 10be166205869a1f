"""API tokens and run callbacks: the rows behind the HTTP API.

Invariants:
- a token's secret is never stored, only its SHA-256; the token is shown once, when it is
  made (``ApiToken.mint``), and checked with a constant-time comparison;
- a token is scoped to one team, and acts with its user's role in that team *at the moment of
  each request* (``runs.permissions.can``), so a role change or a revocation takes effect at
  once;
- ``last_used_at`` is written at most once a minute per token, so using a token does not cost
  a write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

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
    def mint(cls, *, user: Any, team: Any, name: str = "") -> tuple[ApiToken, str]:
        """Create a token; returns it and its full text, which is never available again."""
        for _ in range(5):
            prefix = secrets.token_hex(4)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        secret = secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, team=team, name=name, prefix=prefix, secret_hash=_hash(secret)
        )
        return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"

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

    def revoke(self) -> None:
        now = timezone.now()
        type(self).objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now)
        self.revoked_at = self.revoked_at or now


class RunCallback(models.Model):
    """Where to tell the submitter that a run finished (validated when it is stored)."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="callback")
    url = models.URLField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.run_id} → {self.url}"
