"""A person's API tokens: list them, make one for a team, revoke one.

Invariants:
- a token's full text is shown exactly once: in the answer to the POST that made it, marked
  ``no-store``; it is never put in a URL, a message, the session or a later page (only its
  hash is stored, so it could not be);
- people see and revoke only their own tokens; another person's token id is a 404;
- a token is made only for a team in which its owner holds a role now, and minting and
  revoking are recorded in that team's audit chain with the person as actor.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs.api_models import ApiToken
from runs.models import Team
from runs.permissions import VIEW, actor_for, teams_for
from runs.views.common import console_login_required, render_fragments, wants_fragment

TEMPLATE = "runs/tokens.html"
#: Every role may read over the API, so every team of a person's may get a token; what the
#: token may do is its owner's role in that team at each request (``runs.api.auth``).
API_PERM = VIEW


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="What the token is for, e.g. “nightly import”. Shown in lists; not secret.",
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        empty_label=None,
        help_text="The token acts in this team only, with your role there.",
    )

    def __init__(self, *args: Any, teams: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams


def _get_token_for_user(request: HttpRequest, token_id: int) -> ApiToken:
    """The person's own token; anyone else's is a 404, so its existence does not leak."""
    return get_object_or_404(
        ApiToken.objects.select_related("team", "user"), pk=token_id, user=request.user
    )


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    teams = teams_for(request.user, API_PERM).order_by("name")
    context: dict[str, Any] = {
        "tokens": list(ApiToken.objects.filter(user=request.user).select_related("team")),
        "may_create": teams.exists(),
        "form": TokenForm(teams=teams),
        "created": None,
        "created_text": "",
        "confirming": False,
        "nav": "tokens",
    }
    context.update(extra)
    return context


@never_cache
@console_login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The person's tokens and the form that makes one (a POST here makes it)."""
    if request.method == "GET":
        return TemplateResponse(request, TEMPLATE, _context(request))
    teams = teams_for(request.user, API_PERM).order_by("name")
    form = TokenForm(request.POST, teams=teams)
    if not form.is_valid():
        context = _context(request, form=form)
        if request.htmx:
            return render_fragments(request, TEMPLATE, "token-form", context, status=422)
        return TemplateResponse(request, TEMPLATE, context, status=422)
    token, text = ApiToken.mint(
        user=request.user,
        team=form.cleaned_data["team"],
        name=form.cleaned_data["name"],
        actor=actor_for(request.user),
    )
    messages.success(request, f"Token “{token.name}” made. Copy it now: it is not shown again.")
    # Answered here, not redirected: a redirect would have to carry the secret somewhere a
    # later page load could read it again.
    context = _context(request, created=token, created_text=text)
    if request.htmx:
        return render_fragments(
            request, TEMPLATE, "token-form", context, oob=("token-created", "token-table")
        )
    return TemplateResponse(request, TEMPLATE, context)


@console_login_required
@require_GET
def token_revoke_confirm(request: HttpRequest, token_id: int) -> HttpResponse:
    """The confirmation before a revocation: a page of its own without JS, a box inline with
    htmx. Both post to ``token_revoke``."""
    token = _get_token_for_user(request, token_id)
    context = {"token": token, "confirming": True, "nav": "tokens"}
    if wants_fragment(request):
        return TemplateResponse(request, f"{TEMPLATE}#revoke-confirm", context)
    return TemplateResponse(request, "runs/token_revoke.html", context)


@console_login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = _get_token_for_user(request, token_id)
    label = token.name or f"ao_{token.prefix}_…"
    if token.revoke(actor=actor_for(request.user), actor_user_id=request.user.pk):
        messages.success(request, f"Token “{label}” revoked: it no longer works.")
    else:
        messages.info(request, f"Token “{label}” was already revoked.")
    if not request.htmx:
        return redirect("token-list")
    return render_fragments(
        request, TEMPLATE, "token-table", _context(request), oob=("revoke-confirm",)
    )
