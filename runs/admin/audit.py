"""Admin for circuit breakers and the audit trail of events."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from runs.admin.base import RunReadOnlyChildAdmin, admin_actor
from runs.admin.display import json_field
from runs.models import CircuitBreaker, Event


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
