"""The "Approvals" link of the top bar, with how many requests wait on the signed-in person."""

from __future__ import annotations

from typing import Any

from django import template

from approvals.inbox import BADGE_CAP, Reviewer, pending_count

register = template.Library()


@register.inclusion_tag("approvals/_nav.html", takes_context=True)
def approvals_nav(context: template.Context) -> dict[str, Any]:
    user = context.get("user")
    badge = 0
    if getattr(user, "is_authenticated", False):
        # A page that has read the person's roles (the runs list) passes them on.
        reviewer = Reviewer.of(user, teams=context.get("team_roles"))
        badge = pending_count(user, reviewer=reviewer)
    return {"badge": badge, "badge_cap": BADGE_CAP, "current": context.get("nav") == "approvals"}
