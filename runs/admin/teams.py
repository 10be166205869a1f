"""Admin for teams, their members and their daily spend."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone

from runs.admin.base import ReadOnlyAdminMixin, admin_actor
from runs.admin.display import spent_of
from runs.models import Event, Membership, Team, TeamDailySpend


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
    # Receivers of the team's run callbacks verify signatures with it; only rotated, never typed.
    readonly_fields = ["webhook_secret"]
    actions = ["rotate_webhook_secret"]

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

    @admin.action(description="Rotate the callback signing secret", permissions=["change"])
    def rotate_webhook_secret(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        # One secret per team, so one UPDATE each; each rotation is an event in its team's chain.
        teams = list(queryset)
        for team in teams:
            team.rotate_webhook_secret(actor=admin_actor(request), actor_user_id=request.user.pk)
        self.message_user(
            request,
            f"New signing secret for {', '.join(t.slug for t in teams)}: receivers of their "
            "callbacks need it from the next delivery on.",
            level=messages.SUCCESS,
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
