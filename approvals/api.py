"""Approvals over HTTP: the pending requests a caller can see, and a decision (channel ``api``).

Who may decide is checked when the decision arrives, as in the inbox: the caller's role in the
run's team, the request's approvers, separation of duties. A token acts only in its team.
"""

from __future__ import annotations

from typing import Any, Literal

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from approvals.exceptions import InvalidDecision, NotAllowed, NotPending
from approvals.inbox import Reviewer
from approvals.models import MAX_COMMENT, ApprovalRequest, Decision
from runs.api.auth import not_found, principal, visible_team_ids
from runs.api.common import api_root, decode_cursor, encode_cursor, page_link
from runs.api.problems import Problem
from runs.api.run_views import json_response

router = Router(tags=["approvals"])
Status = ApprovalRequest.Status
DECIDED = [Status.APPROVED, Status.REJECTED, Status.CHANGES_REQUESTED]


def approval_links(request_id: int, run_id: Any) -> dict[str, str]:
    base = f"{api_root()}approvals/{request_id}"
    return {
        "self": base,
        "decision": f"{base}/decision",
        "run": f"{api_root()}runs/{run_id}",
        "inbox": f"/approvals/?request={request_id}",
    }


def approval_body(
    req: ApprovalRequest, *, user: Any = None, reviewer: Reviewer | None = None
) -> dict[str, Any]:
    """The API's view of ``req``; for ``user``, whether they may decide it (a list passes
    the ``reviewer`` it read once, a single request asks the request itself)."""
    decisions = [
        {
            "reviewer": d.reviewer.get_username() if d.reviewer else None,
            "verdict": d.verdict,
            "comment": d.comment,
            "edits": d.edits,
            "channel": d.channel,
            "at": d.created_at,
        }
        for d in sorted(req.decisions.all(), key=lambda d: (d.created_at, d.pk))
    ]
    body: dict[str, Any] = {
        "id": req.pk,
        "run_id": str(req.run_id),
        "name": req.name,
        "workflow": req.workflow,
        "team": req.team.slug,
        "status": req.status,
        "payload": req.payload,
        "editable": req.editable,
        "approvers": req.all_approvers(),
        "quorum": req.quorum,
        "approvals": sum(1 for d in decisions if d["verdict"] == Decision.Verdict.APPROVE),
        "on_timeout": req.on_timeout,
        "deadline": req.deadline_at,
        "escalated_at": req.escalated_at,
        "created_at": req.created_at,
        "decided_at": req.decided_at,
        "outcome": req.outcome,
        "decisions": decisions,
        "links": approval_links(req.pk, req.run_id),
    }
    if user is not None and req.is_pending:
        why = reviewer.refusal(req) if reviewer is not None else req.refusal(user)
        body["you_may_decide"] = not why
        body["why_not"] = why or None
    return body


def visible_requests(request: HttpRequest) -> QuerySet[ApprovalRequest]:
    return (
        ApprovalRequest.objects.filter(team_id__in=visible_team_ids(principal(request)))
        .select_related("team")
        .prefetch_related("decisions__reviewer")
    )


class ApprovalFilters(Schema):
    status: Literal[
        "pending",
        "approved",
        "rejected",
        "changes_requested",
        "expired",
        "cancelled",
        "decided",
        "all",
    ] = "pending"
    workflow: str | None = Field(None, max_length=100)
    team: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=500)


@router.get("/approvals", summary="Approval requests (pending by default), newest first")
def list_approvals(request: HttpRequest, filters: Query[ApprovalFilters]) -> Any:
    p = principal(request)
    qs = visible_requests(request)
    if filters.status == "decided":
        qs = qs.filter(status__in=DECIDED)
    elif filters.status != "all":
        qs = qs.filter(status=filters.status)
    if filters.workflow:
        qs = qs.filter(workflow=filters.workflow)
    if filters.team:
        qs = qs.filter(team__slug=filters.team)
    if filters.cursor:
        when, pk = decode_cursor(filters.cursor, pk=int)
        qs = qs.filter(Q(created_at__lt=when) | Q(created_at=when, pk__lt=pk))
    rows = list(qs.order_by("-created_at", "-pk")[: filters.limit + 1])
    page, more = rows[: filters.limit], len(rows) > filters.limit
    cursor = encode_cursor(page[-1]) if more else None
    # Whether the caller may decide each request: judged from their standing, read once.
    reviewer = Reviewer.of(p.user) if p.user is not None else None
    params = {
        "status": filters.status,
        "workflow": filters.workflow,
        "team": filters.team,
        "limit": filters.limit,
    }
    return json_response(
        {
            "items": [approval_body(r, user=p.user, reviewer=reviewer) for r in page],
            "next_cursor": cursor,
            "links": {"next": page_link(request.path, {**params, "cursor": cursor})}
            if cursor
            else {},
        }
    )


def _get_request(request: HttpRequest, request_id: int) -> ApprovalRequest:
    found = visible_requests(request).filter(pk=request_id).first()
    if found is None:
        raise not_found("approval request")
    return found


@router.get("/approvals/{request_id}", summary="One approval request with its decisions")
def get_approval(request: HttpRequest, request_id: int) -> Any:
    req = _get_request(request, request_id)
    return json_response(approval_body(req, user=principal(request).user))


class DecisionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["approve", "reject", "request_changes"]
    comment: str = Field("", max_length=MAX_COMMENT)
    edits: dict[str, Any] | None = Field(
        None, description="new values of the request's editable fields (with an approval)"
    )


@router.post(
    "/approvals/{request_id}/decision",
    summary="Decide: approve (optionally with edits), reject or request changes",
)
def decide(request: HttpRequest, request_id: int, body: DecisionIn) -> Any:
    p = principal(request)
    req = _get_request(request, request_id)
    if p.team_id is not None and req.team_id != p.team_id:
        raise Problem(403, "this token is scoped to another team", kind="forbidden")
    try:
        req.decide(p.user, body.verdict, comment=body.comment, edits=body.edits, channel="api")
    except NotAllowed as exc:
        raise Problem(403, str(exc), kind="forbidden") from None
    except NotPending as exc:
        raise Problem(409, str(exc), kind="not-pending", status_now=exc.status) from None
    except InvalidDecision as exc:
        raise Problem(422, str(exc), kind="invalid-decision") from None
    req = _get_request(request, request_id)  # afresh, with the new decision
    return json_response(approval_body(req, user=p.user))
