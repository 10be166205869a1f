"""The bell of the top bar: how many in-app notifications the signed-in person has unread."""

from __future__ import annotations

from typing import Any

from django import template

from notifications.bell import bell_context

register = template.Library()


@register.inclusion_tag("notifications/_bell.html", takes_context=True)
def notifications_bell(context: template.Context) -> dict[str, Any]:
    user = context.get("user")
    return {**bell_context(user), "current": context.get("nav") == "notifications"}
