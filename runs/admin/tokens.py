"""Admin for API tokens and run callbacks.

Tokens are minted in the console (``/tokens/``) or with ``manage.py create_api_token``, never
here: the admin lists, searches and revokes them. The secret's hash is neither shown nor
editable, and a token's row is never rewritten by a form; revoking is one conditional UPDATE
of the selected active tokens plus a ``token.revoked`` event per token, in one transaction.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from runs.admin.base import RunReadOnlyChildAdmin, admin_actor
from runs.api_models import TOKEN_PREFIX, ApiToken, RunCallback


class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only rows with one operation, revoke. ``secret_hash`` is in no list, field or
    search: a hash of a 256-bit secret is not useful to an attacker, but nobody needs it."""

    list_display = [
        "shown_prefix",
        "name",
        "user",
        "team",
        "created_at",
        "last_used_at",
        "revoked_at",
        "active",
    ]
    list_display_links = ["shown_prefix"]
    list_filter = [TokenStateFilter, "team", "created_at", "last_used_at"]
    search_fields = ["=prefix", "name", "user__username", "user__email", "team__slug"]
    list_select_related = ["user", "team"]
    date_hierarchy = "created_at"
    actions = ["revoke_tokens"]
    fields = readonly_fields = [
        "shown_prefix",
        "name",
        "user",
        "team",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # A read-only change form; the model-level change permission (obj is None) gates the
    # revoke action.
    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Revoke rather than delete: a revoked row keeps who made it, when, and its last use.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="token", ordering="prefix")
    def shown_prefix(self, obj: ApiToken) -> str:
        return f"{TOKEN_PREFIX}_{obj.prefix}_…"

    @admin.display(description="active", boolean=True)
    def active(self, obj: ApiToken) -> bool:
        return obj.is_active

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = admin_actor(request)
        with transaction.atomic():
            # Locked, so the events name exactly the tokens this UPDATE revokes (a concurrent
            # revocation waits, then finds them revoked and records nothing).
            active = queryset.filter(revoked_at__isnull=True).select_for_update(of=("self",))
            tokens = list(active.select_related("user", "team"))
            revoked = ApiToken.objects.filter(pk__in=[t.pk for t in tokens]).update(
                revoked_at=timezone.now()
            )
            for token in tokens:
                token.record("token.revoked", actor=actor, actor_user_id=request.user.pk)
        skipped = queryset.count() - revoked
        message = f"{revoked} token{'s were' if revoked != 1 else ' was'} revoked."
        if skipped:
            message += f" {skipped} already revoked."
        self.message_user(request, message, level=messages.SUCCESS)


if not admin.site.is_registered(RunCallback):

    @admin.register(RunCallback)
    class RunCallbackAdmin(RunReadOnlyChildAdmin):
        """Stored with the run by the API (after its URL is checked); shown, never edited."""

        list_display = ["url", "run_link", "created_at"]
        search_fields = ["url", "run__id"]
        date_hierarchy = "created_at"
        fields = readonly_fields = ["run", "url", "created_at"]
