"""Admin for runs (with their inlines, actions and operation buttons) and the rows that
belong to a run: steps, attempts, signals and idempotency keys."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten, flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from runs import admin as admin_package
from runs.admin.base import ReadOnlyAdminMixin, RunReadOnlyChildAdmin, admin_actor
from runs.admin.display import EMPTY, json_field, json_preview, spent_of
from runs.exceptions import AgentopsError
from runs.models import (
    TERMINAL,
    IdempotencyKey,
    Run,
    RunStatus,
    Signal,
    Step,
    StepAttempt,
)

#: Rows shown per inline on the run page (newest first); the full list is one link away.
INLINE_LIMIT = 100
#: Failed runs named one by one in an action's warning before "and N more".
FAILURES_LISTED = 10


# --- runs and their checkpoints ----------------------------------------------------------------
class LatestFirstFormSet(BaseInlineFormSet):
    """Shows at most ``INLINE_LIMIT`` rows: a run can have a hundred thousand steps."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_limited"):
            # Looked up on the package at call time, as before the split:
            # ``runs.admin.INLINE_LIMIT`` stays the one knob (tests lower it there).
            self._limited = super().get_queryset()[: admin_package.INLINE_LIMIT]
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
