"""What the reviewers' inbox lists: the requests a person may decide, filters and pages.

Shared by the views and the inbox's WebSocket consumer, so a pushed list is the same HTML as
the page's. Two rules hold everywhere here:

- the *pending* view lists only what the person may decide right now, by the same rules as
  ``ApprovalRequest.refusal`` (team permission ``runs.decide_approval``, the request's
  approvers, separation of duties, not already approved by them); the other views (decided,
  expired, all) list every request of the teams the person may see, as the API does;
- nothing is counted over the table: pages are keyset pages, and a page reads ``size + 1``
  rows to know whether another follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.db.models import DateTimeField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest, Decision
from runs.console import id_range
from runs.models import Membership
from runs.permissions import DECIDE, VIEW, TeamRole, teams_for
from runs.workflow import all_workflows

Status = ApprovalRequest.Status
PAGE_SIZE = 50
#: The nav badge stops counting here ("99+"): it never reads more than this many rows.
BADGE_CAP = 99
#: How many rows one page may read past the ones it shows (requests the coarse SQL filter
#: let through but the exact check refused) before it stops and offers the next page.
MAX_SCAN = 500
DECIDED = (Status.APPROVED, Status.REJECTED, Status.CHANGES_REQUESTED)
STATUS_VIEWS = [
    ("pending", "Pending"),
    ("decided", "Decided"),
    ("expired", "Expired"),
    ("all", "All"),
]
AGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
#: Requests without a deadline sort after every request with one.
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- who may decide what ------------------------------------------------------------------
@dataclass(frozen=True)
class Reviewer:
    """A person's standing for deciding requests, read once per page (at most three small
    queries), so a list of requests is judged without a query per row."""

    user: Any
    team_ids: frozenset[int]  # teams in which they hold ``runs.decide_approval``
    roles: dict[int, str]
    groups: frozenset[str]
    superuser: bool

    @classmethod
    def of(cls, user: Any, *, teams: list[TeamRole] | None = None) -> Reviewer:
        """``teams``: the person's ``team_roles``, when the page has read them already."""
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            return cls(user, frozenset(), {}, frozenset(), False)
        if teams is not None:
            team_ids = frozenset(t.id for t in teams if t.holds(DECIDE))
        else:
            team_ids = frozenset(teams_for(user, DECIDE).values_list("pk", flat=True))
        if not team_ids:  # most pages of most people: at most one query for the badge
            return cls(user, team_ids, {}, frozenset(), bool(user.is_superuser))
        if teams is not None and not user.is_superuser:
            roles = {t.id: t.role for t in teams}
        else:
            roles = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
        return cls(
            user,
            team_ids,
            roles,
            frozenset(user.groups.values_list("name", flat=True)),
            bool(user.is_superuser),
        )

    def may_decide(self, req: ApprovalRequest) -> bool:
        """``refusal`` is empty, except for "approved already" (the page's query checks
        that): for a list, from what was read once."""
        return not self._refusal(req)

    def refusal(self, req: ApprovalRequest, *, verdict: str = Decision.Verdict.APPROVE) -> str:
        """Why the person may not decide ``req`` ("" when they may): the rules of deciding
        (``ApprovalRequest.refusal`` asks here, read at the moment of the decision). A list
        prefetches the requests' decisions and reads the person once for all its rows."""
        if not getattr(self.user, "is_authenticated", False) or not self.user.is_active:
            return "you are not signed in"
        why = self._refusal(req)
        if why or verdict != Decision.Verdict.APPROVE:
            return why
        approved = any(
            d.reviewer_id == self.user.pk and d.verdict == Decision.Verdict.APPROVE
            for d in req.decisions.all()
        )
        return "you approved this request already; it needs another reviewer" if approved else ""

    def _refusal(self, req: ApprovalRequest) -> str:
        if req.team_id not in self.team_ids:
            return "you may not decide approvals in this team"
        if not req.allow_self_approval and req.requested_by_id == self.user.pk:
            return "you started this run, so someone else must decide (separation of duties)"
        spec = req.all_approvers()
        if not spec or self.superuser:
            return ""
        for item in spec:
            kind, _, value = item.partition(":")
            if kind == "role" and self.roles.get(req.team_id) == value:
                return ""
            if kind == "group" and value in self.groups:
                return ""
        return f"this request is for {', '.join(spec)}"

    def approver_condition(self) -> Q:
        """A coarse SQL form of the approvers rule: every request the person matches, and
        perhaps a few more (the JSON text match ignores case); ``may_decide`` is exact."""
        if self.superuser:
            return Q()
        # No approvers named (and none added by an escalation): every decider of the team.
        match = Q(approvers=[]) & (Q(escalated_at__isnull=True) | Q(escalate_to=[]))

        def named(token: str) -> Q:
            return Q(approvers__icontains=token) | Q(
                escalated_at__isnull=False, escalate_to__icontains=token
            )

        for team_id, role in self.roles.items():
            if team_id in self.team_ids:
                match |= Q(team_id=team_id) & named(json.dumps(f"role:{role}"))
        for group in self.groups:
            # SQLite keeps the JSON text as written (non-ASCII escaped); PostgreSQL prints
            # jsonb with the characters themselves.
            for token in {
                json.dumps(f"group:{group}"),
                json.dumps(f"group:{group}", ensure_ascii=False),
            }:
                match |= named(token)
        return match


def decidable(reviewer: Reviewer) -> QuerySet[ApprovalRequest]:
    """Pending requests ``reviewer`` may decide, in SQL; pass the rows through
    ``reviewer.may_decide`` for the exact answer."""
    if not reviewer.team_ids:
        return ApprovalRequest.objects.none()
    user = reviewer.user
    mine = Decision.objects.filter(
        request=OuterRef("pk"), reviewer=user, verdict=Decision.Verdict.APPROVE
    )
    return (
        ApprovalRequest.objects.filter(status=Status.PENDING, team_id__in=reviewer.team_ids)
        .filter(Q(allow_self_approval=True) | ~Q(requested_by=user))
        .filter(reviewer.approver_condition())
        .exclude(Exists(mine))
    )


def visible(user: Any) -> QuerySet[ApprovalRequest]:
    """Every request of the teams ``user`` may see (the history views, a request's page)."""
    return ApprovalRequest.objects.filter(team__in=teams_for(user, VIEW))


def pending_count(user: Any, *, reviewer: Reviewer | None = None) -> int:
    """How many requests wait on ``user`` (up to ``BADGE_CAP + 1``). Reads the rows rather
    than counting, so the cost is bounded by the cap whatever the table holds."""
    reviewer = reviewer or Reviewer.of(user)
    if not reviewer.team_ids:  # decides in no team (most people, on every page): no query
        return 0
    rows = decidable(reviewer).only(
        "pk",
        "team_id",
        "requested_by_id",
        "allow_self_approval",
        "approvers",
        "escalate_to",
        "escalated_at",
    )[: 2 * (BADGE_CAP + 1)]
    return min(BADGE_CAP + 1, sum(1 for r in rows if reviewer.may_decide(r)))


# --- filters ------------------------------------------------------------------------------
class InboxFilterForm(forms.Form):
    """The inbox's filters; an invalid value is reported at its field and ignored."""

    status = forms.ChoiceField(
        required=False, choices=STATUS_VIEWS, widget=forms.RadioSelect, label="Show"
    )
    team = forms.ChoiceField(required=False)
    workflow = forms.ChoiceField(required=False)
    age = forms.ChoiceField(
        required=False,
        label="Age",
        choices=[("", "Any age"), ("1h", "Older than 1 hour"), ("24h", "Older than 24 hours")],
    )
    q = forms.CharField(required=False, max_length=200, label="Search run id, name or payload")

    def __init__(self, data: Any, *, user: Any) -> None:
        super().__init__(data)
        self.fields["team"].choices = [("", "Any team")] + [
            (t.slug, t.name) for t in teams_for(user, VIEW)
        ]
        self.fields["workflow"].choices = [("", "Any workflow")] + [
            (w.name, w.name) for w in all_workflows()
        ]

    def value(self, name: str) -> Any:
        return self.cleaned_data.get(name) if name not in self.errors else None

    @property
    def status_view(self) -> str:
        return self.value("status") or "pending"


def _filtered(
    qs: QuerySet[ApprovalRequest], form: InboxFilterForm, *, now: datetime
) -> QuerySet[ApprovalRequest]:
    if team := form.value("team"):
        qs = qs.filter(team__slug=team)
    if workflow := form.value("workflow"):
        qs = qs.filter(workflow=workflow)
    if age := form.value("age"):
        qs = qs.filter(created_at__lt=now - AGES[age])
    if text := (form.value("q") or "").strip():
        match = Q(name__icontains=text) | Q(payload__icontains=text)
        if bounds := id_range(text):
            match |= Q(run__id__gte=bounds[0], run__id__lte=bounds[1])
        if text.isdigit() and len(text) < 18:
            match |= Q(pk=int(text))
        qs = qs.filter(match)
    return qs


# --- keyset pages -------------------------------------------------------------------------
def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _when(micros: str) -> datetime | None:
    try:
        return _EPOCH + timedelta(microseconds=int(micros))
    except (ValueError, OverflowError):
        return None


def encode_cursor(req: ApprovalRequest, *, urgent: bool) -> str:
    parts = [_micros(req.created_at), req.pk]
    if urgent:
        parts.insert(0, _micros(req.deadline_at or NO_DEADLINE))
    return "_".join(str(p) for p in parts)


def _after(text: str, *, urgent: bool) -> Q | None:
    """The rows after the cursor ``text`` in the page order; None for a cursor we did not
    give out (the first page is shown instead)."""
    parts = text.split("_")
    if len(parts) != (3 if urgent else 2) or not parts[-1].isdigit() or len(parts[-1]) > 18:
        return None
    times = [_when(p) for p in parts[:-1]]
    if any(t is None for t in times):
        return None
    pk = int(parts[-1])
    if urgent:
        due, created = times
        return (
            Q(urgency__gt=due)
            | Q(urgency=due, created_at__gt=created)
            | Q(urgency=due, created_at=created, pk__gt=pk)
        )
    (created,) = times
    return Q(created_at__lt=created) | Q(created_at=created, pk__lt=pk)


@dataclass
class Page:
    requests: list[ApprovalRequest]
    next: str | None  # cursor of the following page, if any


def page_of(
    qs: QuerySet[ApprovalRequest],
    *,
    urgent: bool,
    after: str = "",
    keep: Any = None,
    size: int | None = None,
) -> Page:
    """One page: most urgent first (deadline soonest, requests without one last, then the
    oldest) when ``urgent``, else newest first. Rows ``keep`` refuses are skipped; at most
    ``MAX_SCAN`` of them are read before the page ends early with a cursor past them."""
    size = size or PAGE_SIZE
    if urgent:
        qs = qs.annotate(
            urgency=Coalesce("deadline_at", Value(NO_DEADLINE, output_field=DateTimeField()))
        ).order_by("urgency", "created_at", "pk")
    else:
        qs = qs.order_by("-created_at", "-pk")
    condition = _after(after, urgent=urgent) if after else None
    shown: list[ApprovalRequest] = []
    scanned = 0
    while True:
        batch_qs = qs.filter(condition) if condition is not None else qs
        batch = list(batch_qs[: size + 1])
        last = None
        for req in batch:
            last = req
            scanned += 1
            if keep is None or keep(req):
                shown.append(req)
                if len(shown) > size:
                    return Page(shown[:size], encode_cursor(shown[size - 1], urgent=urgent))
        if len(batch) <= size or last is None:
            return Page(shown, None)
        if scanned >= MAX_SCAN:
            # Stop reading: the next page starts after the last row read.
            return Page(shown, encode_cursor(last, urgent=urgent))
        condition = _after(encode_cursor(last, urgent=urgent), urgent=urgent)


# --- the list -----------------------------------------------------------------------------
def deadline_state(req: ApprovalRequest, now: datetime) -> str:
    """ "past", "soon" (within an hour), "later" or "" (no deadline): the countdown's look."""
    if not req.deadline_at or not req.is_pending:
        return ""
    left = req.deadline_at - now
    if left <= timedelta(0):
        return "past"
    return "soon" if left <= timedelta(hours=1) else "later"


def inbox_context(user: Any, params: QueryDict, *, now: datetime | None = None) -> dict[str, Any]:
    """The filtered, paged inbox of ``user`` from the query string ``params``."""
    now = now or timezone.now()
    reviewer = Reviewer.of(user)
    form = InboxFilterForm(params, user=user)
    form.is_valid()  # collects errors; only valid values filter
    view = form.status_view
    if view == "pending":
        qs = decidable(reviewer)
    else:
        qs = visible(user)
        if view == "decided":
            qs = qs.filter(status__in=DECIDED)
        elif view == "expired":
            qs = qs.filter(status=Status.EXPIRED)
    qs = _filtered(qs, form, now=now).select_related("team").defer("payload", "outcome")
    urgent = view == "pending"
    page = page_of(
        qs,
        urgent=urgent,
        after=params.get("after", ""),
        keep=reviewer.may_decide if urgent else None,
    )
    ids = [r.pk for r in page.requests]
    approvers: dict[int, set[int]] = {}
    for request_id, reviewer_id in Decision.objects.filter(
        request_id__in=ids, verdict=Decision.Verdict.APPROVE, reviewer__isnull=False
    ).values_list("request_id", "reviewer_id"):
        approvers.setdefault(request_id, set()).add(reviewer_id)
    rows = []
    for req in page.requests:
        approved_by = approvers.get(req.pk, set())
        may = req.is_pending and user.pk not in approved_by and reviewer.may_decide(req)
        rows.append(
            {
                "req": req,
                "may_decide": may,
                "approvals": len(approved_by),
                "deadline_state": deadline_state(req, now),
            }
        )
    filters = {k: v for k, v in params.items() if k in form.fields and v}
    inbox_url = reverse("approval-inbox")

    def link(**extra: str) -> str:
        query = urlencode({**filters, **extra})
        return f"{inbox_url}?{query}" if query else inbox_url

    cursor = {"after": params["after"]} if params.get("after") else {}
    return {
        "form": form,
        "status_view": view,
        "rows": rows,
        "next_url": link(after=page.next) if page.next else "",
        "first_url": link() if cursor else "",
        "query": urlencode(filters),
        "ws_query": urlencode({**filters, **cursor}),
        "poll_url": link(**cursor, poll="1"),
        "live": bool(reviewer.team_ids),
        "may_decide_any": bool(reviewer.team_ids),
        "badge": pending_count(user, reviewer=reviewer),
        "badge_cap": BADGE_CAP,
        "now": now,
        "nav": "approvals",
    }


def render_inbox_list(user: Any, query_string: str) -> str:
    """The list partial and the nav badge, as out-of-band swaps (a push, or the answer to a
    decision that leaves the list on screen up to date)."""
    context = inbox_context(user, QueryDict(query_string))
    context["oob"] = True
    return (
        render_to_string("approvals/inbox.html#inbox-list", context).strip()
        + render_to_string("approvals/_nav.html#approvals-badge", context).strip()
    )
