"""Admin for approval requests and their decisions.

Decisions are history: never added, changed or deleted here. A pending request may be
reassigned (approvers, escalation group) or given another deadline — the remedy when nobody
answers — and each such change is recorded on the run's audit chain with the admin as actor.
A decided request is read-only. Requests are also shown inline on their run.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from approvals.models import ApprovalRequest, Decision
from runs.admin.base import ReadOnlyAdminMixin, admin_actor
from runs.admin.display import json_field
from runs.audit import Event
from runs.models import Run

#: What an admin may change on a pending request.
REASSIGNABLE = ("approvers", "escalate_to", "deadline_at", "remind_at", "escalate_at")


class DecisionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Decision
    extra = 0
    can_delete = False
    fields = readonly_fields = ["created_at", "actor", "verdict", "channel", "comment", "edits"]


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "team", "workflow", "run_link", "deadline_at"]
    list_filter = ["status", "team", "workflow", "on_timeout"]
    search_fields = ["name", "workflow", "=run__id"]
    date_hierarchy = "created_at"
    list_select_related = ["team"]
    ordering = ["-created_at"]
    inlines = [DecisionInline]
    show_full_result_count = False
    payload_pretty = json_field("payload")
    outcome_pretty = json_field("outcome")

    fieldsets = [
        (None, {"fields": ["name", "status", "run_link", "team", "workflow", "requested_by"]}),
        ("Proposal", {"fields": ["payload_pretty", "editable"]}),
        (
            "Who decides",
            {"fields": ["approvers", "escalate_to", "quorum", "allow_self_approval"]},
        ),
        (
            "Time",
            {
                "fields": [
                    "created_at",
                    "deadline_at",
                    "on_timeout",
                    "remind_at",
                    "reminded_at",
                    "escalate_at",
                    "escalated_at",
                    "emailed_at",
                    "decided_at",
                ]
            },
        ),
        ("Outcome", {"fields": ["outcome_pretty"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        every = [f for fs in self.fieldsets for f in fs[1]["fields"]]
        if obj is not None and obj.is_pending:
            return [f for f in every if f not in REASSIGNABLE]
        return every

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a request is made by its run's gate, never by hand

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="run")
    def run_link(self, obj: ApprovalRequest) -> SafeString:
        url = reverse(f"{self.admin_site.name}:runs_run_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.run_id)[:8])

    def save_model(
        self, request: HttpRequest, obj: ApprovalRequest, form: Any, change: bool
    ) -> None:
        changed = [f for f in form.changed_data if f in REASSIGNABLE]
        if not changed:
            return
        with transaction.atomic():
            # Guarded like every change of a request: only while it is still pending.
            list(Run.objects.select_for_update().filter(pk=obj.run_id).values_list("pk"))
            updated = ApprovalRequest.objects.filter(
                pk=obj.pk, status=ApprovalRequest.Status.PENDING
            ).update(**{f: getattr(obj, f) for f in changed})
            if updated:
                Event.append(
                    "approval.reassigned",
                    run_id=obj.run_id,
                    team_id=obj.team_id,
                    actor=admin_actor(request),
                    actor_user_id=request.user.pk,
                    data={"request": obj.pk, "changed": {f: str(getattr(obj, f)) for f in changed}},
                    locked=True,
                )
        if not updated:
            self.message_user(request, "The request was decided meanwhile: nothing changed.")


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "request", "actor", "verdict", "channel"]
    list_filter = ["verdict", "channel"]
    search_fields = ["actor", "comment", "=request__id"]
    list_select_related = ["request"]
    show_full_result_count = False


class ApprovalInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApprovalRequest
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = ["seq", "name", "status", "quorum", "deadline_at", "decided_at"]
    ordering = ["-seq"]


def _show_on_runs() -> None:
    """The run page lists its approvals. The runs admin must not import this app (it builds
    on runs), so the inline is added to the registered run admin from here."""
    run_admin = admin.site._registry.get(Run)
    if run_admin is not None and ApprovalInline not in run_admin.inlines:
        run_admin.inlines = [*run_admin.inlines, ApprovalInline]


_show_on_runs()
