"""Django admin for the ledger: where admins audit every run, step, attempt and event.

Invariants the admin keeps:
- runs change only through their operations (``Run.cancel``/``pause``/``resume``), each a
  guarded transition recorded as an event with the admin as actor; the run change form is
  read-only, so the admin never writes a whole run row over the engine's concurrent updates;
- checkpoints, attempts, signals, spend and idempotency keys are written by the engine only:
  they are shown, never added, changed or deleted here;
- events are the append-only audit trail: no add, change or delete permission at all;
- agent data is untrusted: every value is rendered through ``format_html``/``escape``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten, flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from runs.exceptions import AgentopsError
from runs.models import (
    TERMINAL,
    CircuitBreaker,
    Event,
    IdempotencyKey,
    Membership,
    Run,
    RunStatus,
    Signal,
    Step,
    StepAttempt,
    Team,
    TeamDailySpend,
)

#: Longest JSON shown on a change page; agent output can be megabytes.
JSON_DISPLAY_LIMIT = 20_000
#: Longest JSON shown in a list column or an inline row.
JSON_PREVIEW_LIMIT = 200
#: Rows shown per inline on the run page (newest first); the full list is one link away.
INLINE_LIMIT = 100
#: Failed runs named one by one in an action's warning before "and N more".
FAILURES_LISTED = 10
EMPTY = "—"


# --- rendering helpers ----------------------------------------------------------------------
def _dumps(value: Any, *, indent: int | None) -> str:
    return json.dumps(
        value, indent=indent, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder
    )


def pretty_json(value: Any, *, limit: int = JSON_DISPLAY_LIMIT) -> SafeString | str:
    """Indented JSON in a <pre>, escaped (``format_html``) and cut at ``limit`` characters."""
    if value is None or value == {} or value == []:
        return EMPTY
    text = _dumps(value, indent=2)
    more = len(text) - limit
    if more > 0:
        text = f"{text[:limit]}\n… ({more:,} more characters)"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def json_preview(value: Any, *, limit: int = JSON_PREVIEW_LIMIT) -> str:
    """One line of JSON for list columns; a plain string, so the template escapes it."""
    if value is None or value == {} or value == []:
        return EMPTY
    text = _dumps(value, indent=None)
    return text if len(text) <= limit else f"{text[:limit]}…"


def spent_of(spent: Any, limit: Any, *, money: bool = False) -> str:
    """A budget as "spent / limit" ("—" for no limit)."""

    def fmt(v: Any) -> str:
        if v is None:
            return EMPTY
        return f"${Decimal(v):,.4f}" if money else f"{v:,}"

    return f"{fmt(spent)} / {fmt(limit)}"


def json_field(attr: str, *, preview: bool = False) -> Callable[[Any, Any], SafeString | str]:
    """A read-only admin field showing the JSON attribute ``attr``, pretty or as a preview."""

    @admin.display(description=attr)
    def show(self: Any, obj: Any) -> SafeString | str:
        value = getattr(obj, attr)
        return json_preview(value) if preview else pretty_json(value)

    return show


def admin_actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class ReadOnlyAdminMixin:
    """For rows only the engine writes: viewable here, never added, changed or deleted."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- teams ------------------------------------------------------------------------------------
class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "spend_today", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        today = timezone.now().date()
        spend = TeamDailySpend.objects.filter(team=OuterRef("pk"), day=today).values("usd")[:1]
        return super().get_queryset(request).annotate(_spent_today=Subquery(spend))

    @admin.display(description="spent today / daily limit")
    def spend_today(self, obj: Team) -> str:
        spent = getattr(obj, "_spent_today", None) or Decimal(0)
        return spent_of(spent, obj.daily_usd_limit, money=True)

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            # The daily limit is a budget: its changes belong in the audit trail.
            Event.append(
                "team.changed",
                team=obj,
                chain=f"team:{obj.slug}",
                actor=admin_actor(request),
                actor_user_id=request.user.pk,
                data={"fields": {f: str(form.cleaned_data.get(f)) for f in form.changed_data}},
            )


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "user__email", "team__slug", "team__name"]
    list_select_related = ["user", "team"]
    autocomplete_fields = ["user", "team"]


@admin.register(TeamDailySpend)
class TeamDailySpendAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Charged by the engine in each step's own transaction: never edited by hand."""

    list_display = ["team", "day", "usd", "tokens"]
    list_filter = ["team"]
    search_fields = ["team__slug"]
    list_select_related = ["team"]
    date_hierarchy = "day"


# --- runs and their checkpoints ----------------------------------------------------------------
class LatestFirstFormSet(BaseInlineFormSet):
    """Shows at most ``INLINE_LIMIT`` rows: a run can have a hundred thousand steps."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_limited"):
            self._limited = super().get_queryset()[:INLINE_LIMIT]
        return self._limited


class RunChildInline(ReadOnlyAdminMixin, admin.TabularInline):
    formset = LatestFirstFormSet
    extra = 0
    can_delete = False
    show_change_link = True


class StepInline(RunChildInline):
    model = Step
    ordering = ["-seq"]
    verbose_name_plural = f"steps (newest first, at most {INLINE_LIMIT})"
    fields = readonly_fields = [
        "seq",
        "name",
        "kind",
        "status",
        "attempts",
        "service",
        "via_fallback",
        "usage_usd",
        "usage_tokens",
        "started_at",
        "duration",
        "output_preview",
    ]

    @admin.display(description="output / error")
    def output_preview(self, obj: Step) -> str:
        return json_preview(obj.error if obj.error is not None else obj.output)


class StepAttemptInline(RunChildInline):
    model = StepAttempt
    ordering = ["-seq", "-attempt"]
    verbose_name_plural = f"failed attempts (newest first, at most {INLINE_LIMIT})"
    fields = readonly_fields = [
        "seq",
        "name",
        "attempt",
        "outcome",
        "service",
        "worker",
        "finished_at",
        "retry_at",
        "error_preview",
    ]

    error_preview = json_field("error", preview=True)


class SignalInline(RunChildInline):
    model = Signal
    ordering = ["-created_at"]
    verbose_name_plural = f"signals (newest first, at most {INLINE_LIMIT})"
    fields = readonly_fields = [
        "name",
        "actor",
        "dedup_key",
        "created_at",
        "consumed_seq",
        "payload_preview",
    ]

    payload_preview = json_field("payload", preview=True)


#: The operations an admin may apply to a run: each is a ``Run`` method of the same name.
OPERATIONS = ("cancel", "pause", "resume")


def _done(operation: str, run: Run) -> str:
    """What an operation did to ``run`` (as the operation returned it), for the message."""
    if operation == "cancel":
        return "Cancellation requested for"
    if operation == "pause" and run.status != RunStatus.PAUSED:
        return "Pause requested (at the next step boundary) for"  # a worker holds it
    return "Paused" if operation == "pause" else "Resumed"


def _lean(queryset: QuerySet[Run]) -> Iterator[Run]:
    # The operations read only these (and re-read the row themselves); a selection across
    # every run should not load every input and result. Iterating while writing is safe:
    # no operation changes the columns this query filters or orders on.
    return queryset.only("pk", "workflow", "team_id").iterator()


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    """Runs are read here and changed only through their operations (the actions and the
    buttons on the change page), so each change is a guarded transition with its event."""

    list_display = [
        "short_id",
        "workflow",
        "team",
        "status",
        "wait",
        "cost",
        "tokens",
        "actions_used",
        "created_at",
        "finished_at",
    ]
    list_display_links = ["short_id"]
    list_filter = ["status", "workflow", "team", "created_at"]
    search_fields = ["id", "workflow", "idempotency_key"]
    list_select_related = ["team"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs", "pause_runs", "resume_runs"]
    inlines = [StepInline, StepAttemptInline, SignalInline]
    fieldsets = [
        (None, {"fields": ["id", ("workflow", "workflow_version"), ("team", "created_by")]}),
        (None, {"fields": ["status", "operations", ("parent", "idempotency_key"), "history"]}),
        (
            "Waiting and stopping",
            {
                "fields": [
                    ("wait_kind", "waiting_for", "wake_at"),
                    ("stop_requested", "pause_requested", "pause_reason"),
                ]
            },
        ),
        (
            "Data",
            {
                "fields": [
                    "input_pretty",
                    "result_pretty",
                    "result_is_partial",
                    "error_pretty",
                    "progress_pretty",
                ]
            },
        ),
        ("Budget", {"fields": ["budget", "budget_warned"]}),
        (
            "Times",
            {
                "fields": [
                    ("created_at", "started_at", "finished_at", "updated_at"),
                    ("deadline_at", "idle_timeout_seconds", "idle_deadline_at"),
                    "last_activity_at",
                ]
            },
        ),
        (
            "Lease",
            {
                "classes": ["collapse"],
                "fields": [
                    ("lease_owner", "lease_expires_at", "rung_at"),
                    ("step_deadline_at", "recoveries"),
                ],
            },
        ),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)

    # Read-only change form; the model-level change permission (obj is None) still gates the
    # actions and the operation buttons.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False

    # --- list columns
    @admin.display(description="run", ordering="id")
    def short_id(self, obj: Run) -> SafeString:
        return format_html('<span title="{}">{}</span>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="waiting for")
    def wait(self, obj: Run) -> str:
        if obj.status != RunStatus.WAITING:
            return EMPTY
        parts = [obj.get_wait_kind_display(), obj.waiting_for]
        if obj.wake_at:
            parts.append(f"until {obj.wake_at:%Y-%m-%d %H:%M:%S}")
        return " · ".join(p for p in parts if p)

    @admin.display(description="cost", ordering="spent_usd")
    def cost(self, obj: Run) -> str:
        return spent_of(obj.spent_usd, obj.limit_usd, money=True)

    @admin.display(description="tokens", ordering="spent_tokens")
    def tokens(self, obj: Run) -> str:
        return spent_of(obj.spent_tokens, obj.limit_tokens)

    @admin.display(description="actions", ordering="spent_actions")
    def actions_used(self, obj: Run) -> str:
        return spent_of(obj.spent_actions, obj.limit_actions)

    # --- change page fields
    input_pretty = json_field("input")
    result_pretty = json_field("result")
    error_pretty = json_field("error")
    progress_pretty = json_field("progress")

    @admin.display(description="spent / limit")
    def budget(self, obj: Run) -> SafeString:
        usage = obj.budget_usage()
        labels = {
            "usd": "cost",
            "tokens": "tokens",
            "actions": "actions",
            "wall_seconds": "wall time (s)",
        }
        rows = []
        for kind, label in labels.items():
            fig = usage[kind]
            shown = spent_of(fig["spent"], fig["limit"], money=kind == "usd")
            frac = f"{fig['fraction']:.0%}" if fig["fraction"] is not None else ""
            rows.append((label, shown, frac))
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="steps and events")
    def history(self, obj: Run) -> SafeString:
        site = self.admin_site.name
        links = [
            (reverse(f"{site}:runs_step_changelist"), obj.pk, "all steps"),
            (reverse(f"{site}:runs_stepattempt_changelist"), obj.pk, "all attempts"),
            (reverse(f"{site}:runs_event_changelist"), obj.pk, "events"),
        ]
        return format_html_join(
            " · ", '<a href="{}?run__id__exact={}">{}</a>', ((u, pk, t) for u, pk, t in links)
        )

    @admin.display(description="operations")
    def operations(self, obj: Run) -> SafeString | str:
        if obj.status in TERMINAL:
            return "Finished runs never change."
        ops = []
        if not obj.stop_requested:
            ops.append("cancel")
        if obj.status != RunStatus.PAUSED and not obj.pause_requested:
            ops.append("pause")
        if obj.status == RunStatus.PAUSED:
            ops.append("resume")
        # Buttons of the change form itself (which carries the CSRF token), posting elsewhere.
        return format_html_join(
            " ",
            '<button type="submit" class="button" formaction="{}">{}</button>',
            (
                (
                    reverse(f"{self.admin_site.name}:runs_run_operate", args=[obj.pk, op]),
                    f"{op.capitalize()} run",
                )
                for op in ops
            ),
        )

    # --- operations
    def _operate(self, request: HttpRequest, runs: Any, operation: str) -> None:
        """Apply one operation to each run in turn; one run's refusal does not stop the rest."""
        done: Counter[str] = Counter()
        failures: list[str] = []
        for run in runs:
            try:
                after = getattr(run, operation)(actor=admin_actor(request), user_id=request.user.pk)
            except AgentopsError as exc:
                reason = str(exc)
                failures.append(reason if str(run.pk) in reason else f"run {run.pk}: {reason}")
            else:
                done[_done(operation, after)] += 1
        for what, n in done.items():
            self.message_user(request, f"{what} {n} run{'s' if n != 1 else ''}.", messages.SUCCESS)
        if failures:
            listed = "; ".join(failures[:FAILURES_LISTED])
            if len(failures) > FAILURES_LISTED:
                listed += f"; and {len(failures) - FAILURES_LISTED} more"
            self.message_user(
                request,
                f"Could not {operation} {len(failures)} run{'s' if len(failures) != 1 else ''}: "
                f"{listed}",
                level=messages.WARNING,
            )

    @admin.action(description="Cancel selected runs", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._operate(request, _lean(queryset), "cancel")

    @admin.action(description="Pause selected runs", permissions=["change"])
    def pause_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._operate(request, _lean(queryset), "pause")

    @admin.action(description="Resume selected runs", permissions=["change"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._operate(request, _lean(queryset), "resume")

    def get_urls(self) -> list[URLPattern]:
        operate = path(
            "<path:object_id>/operate/<str:operation>/",
            self.admin_site.admin_view(self.operate_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_operate",
        )
        return [operate, *super().get_urls()]

    def operate_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        """One operation on one run, from the buttons on its change page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if operation not in OPERATIONS or not self.has_change_permission(request):
            raise PermissionDenied
        run = get_object_or_404(Run, pk=object_id)
        self._operate(request, [run], operation)
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:runs_run_change", args=[run.pk])
        )


class RunReadOnlyChildAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Rows that (mostly) belong to a run and that only the engine writes."""

    @admin.display(description="run", ordering="run")
    def run_link(self, obj: Any) -> SafeString | str:
        if obj.run_id is None:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:runs_run_change", args=[obj.run_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.run_id, str(obj.run_id)[:8])


@admin.register(Step)
class StepAdmin(RunReadOnlyChildAdmin):
    list_display = [
        "__str__",
        "run_link",
        "kind",
        "status",
        "attempts",
        "service",
        "usage_usd",
        "usage_tokens",
        "started_at",
        "finished_at",
    ]
    list_filter = ["kind", "status", "via_fallback"]
    search_fields = ["name", "service", "run__id"]
    date_hierarchy = "started_at"
    fields = [
        "run",
        ("seq", "name", "kind", "status"),
        ("attempts", "service", "via_fallback"),
        ("usage_usd", "usage_tokens"),
        ("started_at", "finished_at", "duration"),
        "output_pretty",
        "error_pretty",
    ]
    readonly_fields = flatten(fields)

    output_pretty = json_field("output")
    error_pretty = json_field("error")


@admin.register(StepAttempt)
class StepAttemptAdmin(RunReadOnlyChildAdmin):
    list_display = [
        "__str__",
        "run_link",
        "seq",
        "outcome",
        "service",
        "worker",
        "finished_at",
        "retry_at",
    ]
    list_filter = ["outcome"]
    search_fields = ["name", "service", "worker", "run__id"]
    date_hierarchy = "started_at"
    fields = [
        "run",
        ("seq", "name", "attempt", "outcome"),
        ("service", "worker"),
        ("started_at", "finished_at", "retry_at"),
        "error_pretty",
    ]
    readonly_fields = flatten(fields)

    error_pretty = json_field("error")


@admin.register(Signal)
class SignalAdmin(RunReadOnlyChildAdmin):
    """Signals are sent with ``Run.signal`` (API or console), which records and wakes."""

    list_display = ["name", "run_link", "actor", "dedup_key", "created_at", "consumed_seq"]
    search_fields = ["name", "actor", "dedup_key", "run__id"]
    date_hierarchy = "created_at"
    fields = [
        "run",
        ("name", "actor", "dedup_key"),
        ("created_at", "consumed_seq"),
        "payload_pretty",
    ]
    readonly_fields = flatten(fields)

    payload_pretty = json_field("payload")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(RunReadOnlyChildAdmin):
    list_display = ["key", "scope", "run_link", "created_at", "expires_at"]
    list_filter = ["scope"]
    search_fields = ["key", "run__id"]
    date_hierarchy = "created_at"
    fields = readonly_fields = ["scope", "key", "request_hash", "run", "created_at", "expires_at"]


# --- circuit breakers -------------------------------------------------------------------------
@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    """Admins tune the threshold and cooldown; the state belongs to the workers."""

    list_display = [
        "service",
        "state",
        "consecutive_failures",
        "failure_threshold",
        "cooldown_seconds",
        "opened_until",
        "total_failures",
        "total_retries",
        "updated_at",
    ]
    list_filter = ["state"]
    search_fields = ["service"]
    actions = ["close_circuits"]
    TUNABLE = ("failure_threshold", "cooldown_seconds")
    fields = [
        "service",
        TUNABLE,
        ("state", "consecutive_failures", "opened_until"),
        ("total_failures", "total_retries", "updated_at"),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = [f for f in flatten(self.fields) if f not in self.TUNABLE]
        # The service names the breaker: set when a breaker is made ahead of its first use.
        return [f for f in fixed if f != "service"] if obj is None else fixed

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: CircuitBreaker, form: Any, change: bool
    ) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Write only the tuned columns: a full save would overwrite the state that workers
        # change concurrently (an open circuit would be closed by saving a threshold).
        changed = [f for f in form.changed_data if f in self.TUNABLE]
        if not changed:
            return
        obj.save(update_fields=[*changed, "updated_at"])
        Event.append(
            "circuit.tuned",
            chain=f"circuit:{obj.service}",
            actor=admin_actor(request),
            actor_user_id=request.user.pk,
            data={"service": obj.service, **{f: form.cleaned_data[f] for f in changed}},
        )

    @admin.action(description="Close selected circuits", permissions=["change"])
    def close_circuits(self, request: HttpRequest, queryset: QuerySet[CircuitBreaker]) -> None:
        services = list(queryset.values_list("service", flat=True))
        with transaction.atomic():
            rows_updated = CircuitBreaker.objects.filter(service__in=services).update(
                state=CircuitBreaker.State.CLOSED,
                consecutive_failures=0,
                opened_until=None,
                updated_at=timezone.now(),
            )
            for service in services:
                Event.append(
                    "circuit.closed",
                    chain=f"circuit:{service}",
                    actor=admin_actor(request),
                    actor_user_id=request.user.pk,
                    data={"service": service},
                )
        self.message_user(
            request,
            f"{rows_updated} circuit{'s were' if rows_updated != 1 else ' was'} closed.",
            level=messages.SUCCESS,
        )


# --- the audit trail ---------------------------------------------------------------------------
@admin.register(Event)
class EventAdmin(RunReadOnlyChildAdmin):
    """The append-only audit trail: no add, change or delete here (the model and, on
    PostgreSQL, a trigger refuse too)."""

    list_display = ["id", "created_at", "kind", "actor", "run_link", "team", "data_preview"]
    list_filter = ["kind", "team", "created_at"]
    search_fields = ["kind", "actor", "=chain", "run__id"]
    list_select_related = ["team"]
    ordering = ["-id"]
    # Counting a long audit table on every page load is the slow part of its changelist.
    show_full_result_count = False
    fields = [
        ("id", "created_at", "kind"),
        ("actor", "actor_user_id"),
        ("run", "team"),
        "data_pretty",
        ("chain", "chain_seq"),
        "prev_hash",
        "hash",
    ]
    readonly_fields = flatten(fields)

    data_preview = json_field("data", preview=True)
    data_pretty = json_field("data")
