"""The "Approvals" link of the top bar, with how many requests wait on the signed-in person."""

from __future__ import annotations

from typing import Any

from django import template

from approvals.inbox import BADGE_CAP, pending_count

register = template.Library()


@register.inclusion_tag("approvals/_nav.html", takes_context=True)
def approvals_nav(context: template.Context) -> dict[str, Any]:
    user = context.get("user")
    badge = pending_count(user) if getattr(user, "is_authenticated", False) else 0
    return {"badge": badge, "badge_cap": BADGE_CAP, "current": context.get("nav") == "approvals"}
