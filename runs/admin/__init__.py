"""Django admin for the ledger: where admins audit every run, step, attempt and event.

Invariants the admin keeps:
- runs change only through their operations (``Run.cancel``/``pause``/``resume``), each a
  guarded transition recorded as an event with the admin as actor; the run change form is
  read-only, so the admin never writes a whole run row over the engine's concurrent updates;
- checkpoints, attempts, signals, spend and idempotency keys are written by the engine only:
  they are shown, never added, changed or deleted here;
- events are the append-only audit trail: no add, change or delete permission at all;
- agent data is untrusted: every value is rendered through ``format_html``/``escape``.

Importing this package registers every model admin (``admin.autodiscover`` imports it):
``teams`` (teams, members, daily spend), ``runs`` (runs and the rows that belong to them) and
``audit`` (circuit breakers and events); ``display`` and ``base`` hold what they share.
"""

from __future__ import annotations

from runs.admin import audit, callbacks, runs, teams, tokens  # noqa: F401  (registers admins)
from runs.admin.audit import CircuitBreakerAdmin, EventAdmin
from runs.admin.base import ReadOnlyAdminMixin, RunReadOnlyChildAdmin, admin_actor
from runs.admin.display import (
    EMPTY,
    JSON_DISPLAY_LIMIT,
    JSON_PREVIEW_LIMIT,
    json_field,
    json_preview,
    pretty_json,
    spent_of,
)
from runs.admin.runs import (
    FAILURES_LISTED,
    INLINE_LIMIT,
    OPERATIONS,
    IdempotencyKeyAdmin,
    LatestFirstFormSet,
    RunAdmin,
    RunChildInline,
    SignalAdmin,
    SignalInline,
    StepAdmin,
    StepAttemptAdmin,
    StepAttemptInline,
    StepInline,
)
from runs.admin.teams import MembershipAdmin, MembershipInline, TeamAdmin, TeamDailySpendAdmin

__all__ = [
    "EMPTY",
    "FAILURES_LISTED",
    "INLINE_LIMIT",
    "JSON_DISPLAY_LIMIT",
    "JSON_PREVIEW_LIMIT",
    "OPERATIONS",
    "CircuitBreakerAdmin",
    "EventAdmin",
    "IdempotencyKeyAdmin",
    "LatestFirstFormSet",
    "MembershipAdmin",
    "MembershipInline",
    "ReadOnlyAdminMixin",
    "RunAdmin",
    "RunChildInline",
    "RunReadOnlyChildAdmin",
    "SignalAdmin",
    "SignalInline",
    "StepAdmin",
    "StepAttemptAdmin",
    "StepAttemptInline",
    "StepInline",
    "TeamAdmin",
    "TeamDailySpendAdmin",
    "admin_actor",
    "audit",
    "callbacks",
    "json_field",
    "json_preview",
    "pretty_json",
    "runs",
    "spent_of",
    "teams",
]
