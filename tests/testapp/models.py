"""A side-effect ledger: what the test workflows did to "the outside world".

The outside world dedups by ``ctx.idempotency_key()`` (one row per key), and counts how many
times it was asked (``calls``), so a test can show a re-run step was applied once.
"""

from __future__ import annotations

from django.db import models


class Effect(models.Model):
    key = models.CharField(max_length=200, unique=True)
    run_id = models.CharField(max_length=64, db_index=True)
    label = models.CharField(max_length=200, blank=True)
    calls = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key} x{self.calls}"
