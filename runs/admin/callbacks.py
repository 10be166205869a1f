"""Admin for run callback deliveries and their attempts.

Deliveries and attempts are written by the outbox and its workers only: shown here, never
added, changed or deleted. One operation, redeliver, sends selected deliveries again (same
``webhook-id``, a fresh count of attempts), recorded on each run with the admin as actor.
The receiver's answer is shown as a short excerpt, escaped like all data from outside.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from runs.admin.base import RunReadOnlyChildAdmin, admin_actor
from runs.deliveries import CallbackAttempt, CallbackDelivery


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    extra = 0
    can_delete = False
    ordering = ["-number", "-id"]
    fields = readonly_fields = [
        "number",
        "at",
        "duration_ms",
        "ok",
        "permanent",
        "status_code",
        "error",
        "response_excerpt",
        "worker",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(RunReadOnlyChildAdmin):
    list_display = [
        "type",
        "run_link",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["status", "type", "created_at"]
    search_fields = ["=run__id", "callback__url"]
    list_select_related = ["run"]
    date_hierarchy = "created_at"
    actions = ["redeliver"]
    fields = readonly_fields = [
        "run",
        "callback",
        "event",
        "type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body",
    ]
    inlines = [CallbackAttemptInline]

    # A read-only change form; the model-level change permission (obj is None) gates the
    # redeliver action.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and request.user.has_perm("runs.change_callbackdelivery")

    @admin.action(description="Redeliver selected callbacks", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        done = CallbackDelivery.redeliver(
            ids, actor=admin_actor(request), actor_user_id=request.user.pk
        )
        message = f"{done} deliver{'ies' if done != 1 else 'y'} will be sent again."
        if done < len(ids):
            message += f" {len(ids) - done} being sent right now: try again in a minute."
        self.message_user(request, message, level=messages.SUCCESS)


@admin.register(CallbackAttempt)
class CallbackAttemptAdmin(RunReadOnlyChildAdmin):
    list_display = ["delivery", "number", "at", "ok", "status_code", "duration_ms", "error"]
    list_filter = ["ok", "permanent", "at"]
    search_fields = ["=delivery__run__id"]
    list_select_related = ["delivery"]
    date_hierarchy = "at"
    fields = readonly_fields = [
        "delivery",
        "number",
        "at",
        "duration_ms",
        "ok",
        "permanent",
        "status_code",
        "error",
        "response_excerpt",
        "worker",
    ]
