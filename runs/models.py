"""The ledger: teams, runs, step checkpoints, attempts, signals, breakers and budgets.

Every durable fact is a row here; Celery messages carry only a run id. A run's status changes
only through ``Run.transition`` (one guarded conditional UPDATE plus its event, in one
transaction), and a run in a terminal state never changes again.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.audit import Event
from runs.exceptions import IllegalTransition, TerminalRunError
from runs.live import publish_run_changed
from runs.operations import RunOperations
from runs.webhooks import new_secret

__all__ = [
    "CircuitBreaker",
    "Event",
    "IdempotencyKey",
    "Membership",
    "Run",
    "RunStatus",
    "Signal",
    "Step",
    "StepAttempt",
    "Team",
    "TeamDailySpend",
    "WaitKind",
]


class Team(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    daily_usd_limit = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Spend limit per UTC day for all of the team's runs (empty: no limit).",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )
    webhook_secret = models.CharField(
        max_length=100,
        default=new_secret,
        help_text="Signs the team's run callbacks (Standard Webhooks): receivers verify with it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def rotate_webhook_secret(self, *, actor: str, actor_user_id: int | None = None) -> str:
        """Give the team a new signing secret, from the next delivery attempt on (pending
        retries included); recorded in the team's audit chain, without the secret."""
        secret = new_secret()
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(webhook_secret=secret)
            Event.append(
                "team.webhook_secret_rotated",
                team=self,
                chain=f"team:{self.slug}",
                actor=actor,
                actor_user_id=actor_user_id,
            )
        self.webhook_secret = secret
        return secret

    def spent_today(self, *, day: date | None = None) -> Decimal:
        day = day or timezone.now().date()
        row = TeamDailySpend.objects.filter(team=self, day=day).values_list("usd", flat=True)
        return row.first() or Decimal(0)


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        OPERATOR = "operator", "Operator (team lead)"
        REVIEWER = "reviewer", "Reviewer"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class TeamDailySpend(models.Model):
    """What a team's runs spent on one UTC day; charged in the step's own transaction."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="daily_spend")
    day = models.DateField()
    usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="spend_team_day")]
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.team} {self.day}: ${self.usd}"

    @classmethod
    def charge(cls, team_id: int, *, usd: Decimal, tokens: int, day: date) -> None:
        updated = cls.objects.filter(team_id=team_id, day=day).update(
            usd=F("usd") + usd, tokens=F("tokens") + tokens
        )
        if not updated:
            obj, created = cls.objects.get_or_create(
                team_id=team_id, day=day, defaults={"usd": usd, "tokens": tokens}
            )
            if not created:
                cls.objects.filter(pk=obj.pk).update(
                    usd=F("usd") + usd, tokens=F("tokens") + tokens
                )


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)
ACTIVE = [s for s in RunStatus if s not in TERMINAL]


class WaitKind(models.TextChoices):
    TIMER = "timer", "Timer"
    EVENT = "event", "External event"
    RETRY = "retry", "Retry backoff"
    CIRCUIT = "circuit", "Open circuit"
    APPROVAL = "approval", "Person"


class StopReason(models.TextChoices):
    NONE = "", "—"
    CANCEL = "cancel", "Cancel"
    TIMEOUT = "timeout", "Deadline"


def budget_spent_fraction(spent: Any, limit: Any) -> float | None:
    """The fraction of a budget spent (1.0 and over: reached), None without a limit."""
    return float(spent) / float(limit) if limit else None


class Run(RunOperations, models.Model):
    """One execution of a workflow.

    Lease invariant: a worker drives the run only while ``lease_owner`` is its token and
    ``lease_expires_at`` is in the future; every checkpoint write re-checks that in its UPDATE.
    ``status=running`` with no lease means runnable and not held (released between time
    slices); an expired lease means its worker died (the taker counts a recovery).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="runs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The finished run this one retries from a step.",
    )
    workflow = models.CharField(max_length=100, db_index=True)
    workflow_version = models.CharField(max_length=50, blank=True)
    queue = models.CharField(
        max_length=64, default="runs", help_text="The Celery queue its doorbell rings on."
    )
    input = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    wait_kind = models.CharField(max_length=16, choices=WaitKind.choices, blank=True)
    waiting_for = models.CharField(max_length=200, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.CharField(
        max_length=16, choices=StopReason.choices, blank=True, default=""
    )
    pause_requested = models.BooleanField(default=False)
    pause_reason = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    result_is_partial = models.BooleanField(default=False)
    error = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    progress = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    rung_at = models.DateTimeField(null=True, blank=True)
    step_deadline_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    idle_timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    idle_deadline_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0)

    limit_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    limit_tokens = models.BigIntegerField(null=True, blank=True)
    limit_actions = models.PositiveIntegerField(null=True, blank=True)
    limit_wall_seconds = models.PositiveIntegerField(null=True, blank=True)
    spent_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    spent_tokens = models.BigIntegerField(default=0)
    spent_actions = models.PositiveIntegerField(default=0)
    budget_warned = models.JSONField(default=list, blank=True)
    #: When the wall time passes 80 % of its limit, until that is warned of: a run waiting on
    #: a person for hours crosses it with no step to notice (``runs.sweeps.warn_wall_time``).
    wall_warn_at = models.DateTimeField(null=True, blank=True)

    idempotency_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("start_run", "Can start runs"),
            ("operate_run", "Can cancel, pause, resume, retry runs and raise their budgets"),
            ("decide_approval", "Can approve or reject agent actions"),
            ("administer_team", "Can administer a team"),
        ]
        indexes = [
            # Each sweep reads one of these partial indexes, so its cost follows what is due.
            models.Index(fields=["wake_at"], name="run_due_timers", condition=Q(status="waiting")),
            models.Index(
                fields=["lease_expires_at"], name="run_leases", condition=Q(status="running")
            ),
            # ``rung_at`` is set only while a run is runnable and nobody holds it, and
            # ``finished_at`` only once it is finished: single-column conditions that SQLite's
            # planner can match against bound parameters (it cannot match ``status IN (?, ?)``).
            models.Index(fields=["rung_at"], name="run_unheld", condition=Q(rung_at__isnull=False)),
            models.Index(
                fields=["deadline_at"],
                name="run_deadlines",
                condition=Q(deadline_at__isnull=False, finished_at__isnull=True, stop_requested=""),
            ),
            models.Index(
                fields=["idle_deadline_at"],
                name="run_idle",
                condition=Q(status="running", idle_deadline_at__isnull=False, stop_requested=""),
            ),
            models.Index(
                fields=["step_deadline_at"],
                name="run_step_deadlines",
                condition=Q(status="running", step_deadline_at__isnull=False),
            ),
            models.Index(
                fields=["wall_warn_at"],
                name="run_wall_warnings",
                condition=Q(wall_warn_at__isnull=False, finished_at__isnull=True),
            ),
            models.Index(fields=["team", "status", "-created_at"], name="run_team_status"),
            # The console's "over 80 % of budget" view, newest first: few runs, read by page
            # (unfinished ones only, as the view: finished ones would be read and dropped).
            models.Index(
                fields=["-created_at", "-id"],
                name="run_over_budget",
                condition=~Q(budget_warned=[]) & Q(finished_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.id} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The model half of "a terminal run never changes" (PostgreSQL adds a trigger).
        if getattr(self, "_loaded_status", None) in TERMINAL:
            raise TerminalRunError(f"run {self.pk} is {self._loaded_status}: it cannot change")
        super().save(*args, **kwargs)

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Run:
        obj = super().from_db(db, field_names, values)
        obj._loaded_status = obj.__dict__.get("status")
        return obj

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    # --- the one place where status changes -----------------------------------------------
    @classmethod
    def transition(
        cls,
        run_id: Any,
        *,
        to: str,
        from_: list[str] | tuple[str, ...],
        event: str,
        actor: str,
        action: str = "",
        guard: Q | None = None,
        data: dict[str, Any] | None = None,
        actor_user_id: int | None = None,
        **fields: Any,
    ) -> bool:
        """Move the run from one of ``from_`` to ``to`` with one conditional UPDATE.

        Returns False when the guard did not match (another actor won the race); raises
        ``IllegalTransition`` when ``action`` is given and the run is in a state that can never
        take this action, which is the message a person sees. A milestone of a run with a
        callback also writes its delivery here, in the same transaction (runs/deliveries.py).
        """
        now = timezone.now()
        assert not set(from_) & TERMINAL, "terminal runs never change"
        with transaction.atomic():
            qs = cls.objects.filter(pk=run_id, status__in=list(from_))
            if guard is not None:
                qs = qs.filter(guard)
            if to in TERMINAL:
                fields.setdefault("finished_at", now)
                fields.update(
                    lease_owner="", lease_expires_at=None, step_deadline_at=None, rung_at=None
                )
            elif to in (RunStatus.WAITING, RunStatus.PAUSED):
                fields["rung_at"] = None  # nobody needs to ring for it until it is runnable
            updated = qs.update(status=to, updated_at=now, **fields)
            if not updated:
                if action:
                    current = cls.objects.filter(pk=run_id).values_list("status", flat=True)
                    status = current.first()
                    if status is None:
                        raise cls.DoesNotExist(f"no run {run_id}")
                    if status not in from_:
                        raise IllegalTransition(run_id, status, action)
                return False
            team_id, callback_id = (
                cls.objects.filter(pk=run_id).values_list("team_id", "callback__id").first()
            )
            recorded = Event.append(
                event,
                run_id=run_id,
                team_id=team_id,
                actor=actor,
                actor_user_id=actor_user_id,
                data={"to": to, **(data or {})},
                locked=True,
            )
            if callback_id is not None:
                # The outbox: the callback's delivery is written with the event it announces.
                from runs.deliveries import CallbackDelivery

                CallbackDelivery.record(callback_id, event=recorded, to=to, fields=fields)
            publish_run_changed(run_id, team_id=team_id, status_changed=True)
        return True

    # --- stalled: one definition for the console's filter and badge, the dashboard and the
    # notifications' milestone -------------------------------------------------------------
    #: A running run without an idle timeout of its own looks stalled after this long with
    #: no step finished.
    STALLED_AFTER = timedelta(minutes=10)
    #: A lapsed lease is recovered by the next leases sweep (seconds); one still lapsed
    #: after this long means the run has nobody to drive it.
    LEASE_LAPSED_AFTER = timedelta(minutes=1)

    @classmethod
    def stalled_condition(cls, now: datetime) -> Q:
        """Running, and no step finished within its own idle timeout (or, without one, within
        ``STALLED_AFTER``), or its worker's lease lapsed a minute ago and nobody recovered it
        (a worker lost and recovered at once is not worth anyone's attention). A long step
        of a run with a longer idle timeout is not stalled; ``is_stalled`` is the same test
        of a loaded run."""
        return Q(status=RunStatus.RUNNING) & (
            Q(idle_deadline_at__lt=now)
            | Q(idle_deadline_at__isnull=True, last_activity_at__lt=now - cls.STALLED_AFTER)
            | Q(lease_expires_at__lt=now - cls.LEASE_LAPSED_AFTER)
        )

    def is_stalled(self, *, now: datetime) -> bool:
        if self.status != RunStatus.RUNNING:
            return False
        if self.idle_deadline_at is not None:
            idle = self.idle_deadline_at < now
        else:
            quiet = self.last_activity_at
            idle = quiet is not None and quiet < now - self.STALLED_AFTER
        lease = self.lease_expires_at
        return idle or (lease is not None and lease < now - self.LEASE_LAPSED_AFTER)

    # --- budget figures (for the console and the checks) -----------------------------------
    def budget_figures(self, *, now: datetime | None = None) -> tuple[tuple[str, Any, Any], ...]:
        """(kind, spent, limit) of each budget; the limit is None where there is none."""
        now = now or timezone.now()
        wall = (
            ((self.finished_at or now) - self.started_at).total_seconds()
            if self.started_at
            else 0.0
        )
        return (
            ("usd", self.spent_usd, self.limit_usd),
            ("tokens", self.spent_tokens, self.limit_tokens),
            ("actions", self.spent_actions, self.limit_actions),
            ("wall_seconds", round(wall, 1), self.limit_wall_seconds),
        )

    def budget_usage(self, *, now: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Spent and limit per budget kind, with the fraction used where there is a limit."""
        return {
            kind: {"spent": spent, "limit": limit, "fraction": budget_spent_fraction(spent, limit)}
            for kind, spent, limit in self.budget_figures(now=now)
        }

    def as_dict(self) -> dict[str, Any]:
        """The run as the commands and the API print it."""
        return {
            "id": str(self.id),
            "workflow": self.workflow,
            "workflow_version": self.workflow_version,
            "team": self.team.slug,
            "status": self.status,
            "wait": (
                {"kind": self.wait_kind, "for": self.waiting_for, "wake_at": self.wake_at}
                if self.status == RunStatus.WAITING
                else None
            ),
            "stop_requested": self.stop_requested or None,
            "pause_reason": self.pause_reason or None,
            "input": self.input,
            "result": self.result,
            "result_is_partial": self.result_is_partial,
            "error": self.error,
            "progress": self.progress,
            "budget": self.budget_usage(),
            "recoveries": self.recoveries,
            "parent": str(self.parent_id) if self.parent_id else None,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deadline_at": self.deadline_at,
        }


class Step(models.Model):
    """The checkpoint of one step, keyed by (run, seq). Replay returns ``output`` (or re-raises
    ``error``) instead of running the step again."""

    class Kind(models.TextChoices):
        STEP = "step", "Step"
        SLEEP = "sleep", "Sleep"
        WAIT = "wait", "Wait for event"
        APPROVAL = "approval", "Approval"
        COMPENSATION = "compensation", "Compensation"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.STEP)
    status = models.CharField(max_length=16, choices=Status.choices)
    output = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    attempts = models.PositiveIntegerField(default=1)
    service = models.CharField(max_length=100, blank=True)
    via_fallback = models.BooleanField(default=False)
    usage_usd = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    usage_tokens = models.BigIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq")]
        ordering = ["run", "seq"]

    def __str__(self) -> str:
        return f"{self.seq}. {self.name} ({self.status})"

    @property
    def duration(self) -> timedelta | None:
        return (self.finished_at - self.started_at) if self.finished_at else None


class StepAttempt(models.Model):
    """A failed attempt of a step (the successful one is the ``Step`` itself)."""

    class Outcome(models.TextChoices):
        RETRYABLE = "retryable", "Failed, will retry"
        PERMANENT = "permanent", "Failed permanently"
        TIMEOUT = "timeout", "Timed out"
        EXHAUSTED = "exhausted", "Failed, retries exhausted"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempts")
    seq = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    attempt = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    service = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=120, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "seq", "attempt"], name="attempt_unique")
        ]
        # The dashboard's retries per service read a window of these by start time.
        indexes = [models.Index(fields=["started_at"], name="attempt_started")]
        ordering = ["run", "seq", "attempt"]

    def __str__(self) -> str:
        return f"{self.name} attempt {self.attempt}: {self.outcome}"


class Signal(models.Model):
    """An external event for ``ctx.wait_for_event``; consumed by exactly one wait."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    dedup_key = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    consumed_seq = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "dedup_key"], name="signal_dedup", condition=~Q(dedup_key="")
            )
        ]
        indexes = [
            models.Index(
                fields=["run", "name"],
                name="signal_pending",
                condition=Q(consumed_seq__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} for {self.run_id}"


class IdempotencyKey(models.Model):
    """A start request's key: the same key and body within 24 h return the same run."""

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key")
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"


class CircuitBreaker(models.Model):
    """Shared state of one external service, so every worker sees the same open circuit."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half-open (one trial call)"

    service = models.CharField(max_length=100, primary_key=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    failure_threshold = models.PositiveIntegerField(default=5)
    cooldown_seconds = models.PositiveIntegerField(default=30)
    opened_until = models.DateTimeField(null=True, blank=True)
    total_failures = models.PositiveBigIntegerField(default=0)
    total_retries = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.service}: {self.state}"


from runs.api_models import ApiToken, RunCallback  # noqa: E402, F401  (registers them)
from runs.deliveries import CallbackAttempt, CallbackDelivery  # noqa: E402, F401
