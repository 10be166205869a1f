"""The reviewers' inbox under /approvals/: the list, a request's pane, and the decisions.

A decision is a POST that calls ``ApprovalRequest.decide`` with the signed-in person and
channel ``web``; who may decide is checked there, at that moment. What goes wrong is shown
at the form with its own status (403 not allowed, 409 decided meanwhile, 422 a bad value),
never as a server error. With htmx a decision answers with the refreshed pane, the list on
screen without the request, and a toast; without JS it goes back to the inbox.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals.exceptions import InvalidDecision, NotAllowed, NotPending
from approvals.forms import BULK_VERDICTS, BulkDecisionForm
from approvals.inbox import (
    BADGE_CAP,
    InboxFilterForm,
    inbox_context,
    pending_count,
    render_inbox_list,
    visible,
)
from approvals.models import ApprovalRequest, Decision
from approvals.review import detail_context, diff_of, edit_fields
from notifications.bell import mark_approval_read
from runs.views.common import (
    back_to,
    console_login_required,
    render_fragments,
    report_form_errors,
    report_outcomes,
    toasts_oob,
    wants_fragment,
)

INBOX = "approvals/inbox.html"
DETAIL = "approvals/request.html"
LIST_PARTIALS = ("inbox-live", "inbox-list")
#: Outcomes of a bulk decision, in the order the summary names them.
OUTCOMES = ("approved", "rejected", "already decided", "not allowed", "not found", "not possible")
DONE = frozenset({"approved", "rejected"})
Verdict = Decision.Verdict


def _get_request_for_user(request: HttpRequest, request_id: int) -> ApprovalRequest:
    """The request if the user may see its team; 404 otherwise, so another team's request
    does not leak. Whether they may *decide* it is the model's question, asked on POST."""
    return get_object_or_404(
        visible(request.user).select_related("team", "run", "requested_by"), pk=request_id
    )


@console_login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    context = inbox_context(request.user, request.GET)
    context["polling"] = request.GET.get("poll") == "1"
    if wants_fragment(request):
        target = request.htmx.target if request.htmx.target in LIST_PARTIALS else "inbox-live"
        return TemplateResponse(request, f"{INBOX}#{target}", context)
    # ``?request=<id>`` (the API's and the run page's links) opens that request's pane.
    selected = request.GET.get("request", "")
    if selected.isdigit() and len(selected) < 18:
        req = visible(request.user).select_related("team", "run").filter(pk=selected).first()
        if req is not None:
            context.update(detail_context(req, request.user))
    return TemplateResponse(request, INBOX, context)


@console_login_required
@require_GET
def request_detail(request: HttpRequest, request_id: int) -> HttpResponse:
    req = _get_request_for_user(request, request_id)
    context = detail_context(req, request.user)
    mark_approval_read(request.user, req.pk)
    if wants_fragment(request):
        return TemplateResponse(request, f"{DETAIL}#approval-detail", context)
    return TemplateResponse(request, DETAIL, context)


@console_login_required
@require_GET
def run_request(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """The run's page links here: the request it waits on (else its latest) in the inbox."""
    requests = visible(request.user).filter(run_id=run_id)
    req = (
        requests.filter(status=ApprovalRequest.Status.PENDING).order_by("-seq").first()
        or requests.order_by("-seq").first()
    )
    if req is None:
        raise Http404("No approval request of this run that you may see.")
    return redirect(f"{reverse('approval-inbox')}?{urlencode({'request': req.pk})}")


def _screen_oob(request: HttpRequest) -> str:
    """What else on the person's screen a decision changes, as out-of-band swaps: the
    inbox list with the filters it shows (when the page is the inbox), and the nav badge."""
    current = urlsplit(request.htmx.current_url or "") if request.htmx else None
    if current is not None and current.path == reverse("approval-inbox"):
        return render_inbox_list(request.user, current.query)
    return render_to_string(
        "approvals/_nav.html#approvals-badge",
        {"badge": pending_count(request.user), "badge_cap": BADGE_CAP, "oob": True},
    )


def _posted_edits(req: ApprovalRequest, data: QueryDict) -> tuple[list[Any], dict[str, Any]]:
    """The edits the form carries; a posted field that is not editable is passed on as it
    is, so that ``decide`` refuses it with its own message."""
    fields, edits = edit_fields(req, data)
    for key in data:
        name = key.removeprefix("edit:")
        if key.startswith("edit:") and name not in req.editable:
            edits[name] = data.get(key)
    return fields, edits


def _decision_error(
    request: HttpRequest, req: ApprovalRequest, message: str, *, status: int
) -> HttpResponse:
    """The pane again, with what the person typed and ``message`` at the form."""
    req.refresh_from_db()  # decided meanwhile: show how
    context = detail_context(req, request.user, data=request.POST, error=message)
    if not request.htmx:
        return TemplateResponse(request, DETAIL, context, status=status)
    response = render_fragments(
        request, DETAIL, "approval-detail", context, extra=_screen_oob(request), status=status
    )
    # The page swaps error answers (403, 409) into the pane only when they say so: any
    # other error page is never swapped in.
    response["X-Inline-Error"] = "true"
    return response


def _done(req: ApprovalRequest, verdict: str) -> str:
    if verdict == Verdict.REJECT:
        return f"Rejected “{req.name}”."
    if verdict == Verdict.REQUEST_CHANGES:
        return f"Changes requested on “{req.name}”."
    if req.status == ApprovalRequest.Status.APPROVED:
        return f"Approved “{req.name}”: the run continues."
    return (
        f"Your approval of “{req.name}” is recorded "
        f"({req.approvals_so_far()} of {req.quorum}); it needs another reviewer."
    )


@console_login_required
@require_POST
def request_decide(request: HttpRequest, request_id: int) -> HttpResponse:
    req = _get_request_for_user(request, request_id)
    verdict = request.POST.get("verdict", "")
    fields, edits = _posted_edits(req, request.POST)
    bad = [f for f in fields if f.error]
    if bad:
        return _decision_error(
            request, req, f"Check the field {bad[0].name}: {bad[0].error}.", status=422
        )
    try:
        req.decide(
            request.user,
            verdict,
            comment=request.POST.get("comment", ""),
            edits=edits,
            channel=Decision.Channel.WEB,
        )
    except NotAllowed as exc:
        return _decision_error(request, req, f"You may not decide this: {exc}.", status=403)
    except NotPending as exc:
        return _decision_error(request, req, str(exc).capitalize() + ".", status=409)
    except InvalidDecision as exc:
        return _decision_error(request, req, str(exc).capitalize() + ".", status=422)
    messages.success(request, _done(req, verdict))
    if not request.htmx:
        return redirect("approval-inbox")
    context = detail_context(_get_request_for_user(request, request_id), request.user)
    return render_fragments(request, DETAIL, "approval-detail", context, extra=_screen_oob(request))


@console_login_required
@require_POST
def request_diff(request: HttpRequest, request_id: int) -> HttpResponse:
    """The diff of the edits typed so far (nothing is stored)."""
    req = _get_request_for_user(request, request_id)
    fields, edits = edit_fields(req, request.POST)
    context = {
        "req": req,
        "diffs": diff_of(req.payload, edits),
        "field_errors": [f for f in fields if f.error],
    }
    return TemplateResponse(request, f"{DETAIL}#edit-diff", context)


def decide_many(user: Any, ids: list[str], verdict: str, *, comment: str = "") -> Counter[str]:
    """Decide each request of ``ids`` by itself (its own transaction and permission check);
    the count per outcome. One that fails never stops the others; a request the person may
    not see counts as not found, as with a single request."""
    outcomes: Counter[str] = Counter()
    done = "approved" if verdict == Verdict.APPROVE else "rejected"
    for text in ids:
        req = None
        if text.isdigit() and len(text) < 18:
            req = visible(user).filter(pk=int(text)).first()
        if req is None:
            outcomes["not found"] += 1
            continue
        try:
            req.decide(user, verdict, comment=comment, channel=Decision.Channel.WEB)
        except NotAllowed:
            outcomes["not allowed"] += 1
        except NotPending:
            outcomes["already decided"] += 1
        except InvalidDecision:
            outcomes["not possible"] += 1
        else:
            outcomes[done] += 1
    return outcomes


@console_login_required
@require_POST
def inbox_bulk(request: HttpRequest) -> HttpResponse:
    """htmx gets the toast and the list without the decided requests; a plain form post
    goes back to the inbox with its filters."""
    form = BulkDecisionForm(request.POST)
    status = 200
    if not form.is_valid():
        report_form_errors(request, form)
        status = 422
    else:
        verdict = form.cleaned_data["verdict"]
        outcomes = decide_many(
            request.user,
            form.cleaned_data["request"],
            verdict,
            comment=form.cleaned_data["comment"],
        )
        report_outcomes(request, BULK_VERDICTS[verdict], outcomes, order=OUTCOMES, done=DONE)
    if request.htmx:
        return HttpResponse(_screen_oob(request) + toasts_oob(request), status=status)
    keep = {*InboxFilterForm.base_fields, "after"}
    return redirect(back_to("approval-inbox", request.POST.get("query", ""), keep))
