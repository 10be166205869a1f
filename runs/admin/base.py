"""Shared pieces of the admin: the actor name and the read-only bases."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runs.admin.display import EMPTY


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


class RunReadOnlyChildAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Rows that (mostly) belong to a run and that only the engine writes."""

    @admin.display(description="run", ordering="run")
    def run_link(self, obj: Any) -> SafeString | str:
        if obj.run_id is None:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:runs_run_change", args=[obj.run_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.run_id, str(obj.run_id)[:8])
