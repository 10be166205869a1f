"""The people-facing pages of the notifications: preferences, the in-app list behind the bell,
and (for staff) the viewer of the emails the embedded default stores instead of sending.

Invariants:
- a person sees and changes only their own preferences and messages: every query starts from
  the signed-in person, and another person's message id is a 404, so its existence does not
  leak; the mail viewer is staff-only and a 404 for everyone else;
- every mutation is a POST (CSRF-checked) and announces the person's new unread count to
  their other tabs after commit;
- messages quote agent output: everything is escaped by the templates, and an email's HTML
  part is never put into our page: it is served on its own URL, under a policy that allows
  no script, no network and no navigation, into an ``<iframe sandbox="">``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from notifications import bell
from notifications.forms import PreferenceRowForm, SettingsForm, save_all
from notifications.models import Channel, EventType, Message
from notifications.preferences import Resolver, effective
from runs.views.common import console_login_required, render_fragments, wants_fragment

LIST_TEMPLATE = "notifications/list.html"
PREFS_TEMPLATE = "notifications/preferences.html"
MAIL_PAGE_SIZE = 50
#: The policy of an email's HTML part: inline styles (emails are written with them) and
#: inline images only; no script, no fetches, no forms, no plugins; sandboxed even when
#: opened outside the frame; framed only by our own pages.
MAIL_HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'self'; sandbox"
)


# --- the in-app list --------------------------------------------------------------------------
def _get_message_for_user(request: HttpRequest, message_id: int) -> Message:
    """One of the person's own in-app messages; anyone else's is a 404."""
    return get_object_or_404(bell.in_app_of(request.user), pk=message_id)


def _list_context(request: HttpRequest) -> dict[str, Any]:
    before = request.GET.get("before", "")
    page = bell.page_of(bell.in_app_of(request.user).select_related("run"), before=before)
    base = reverse("notification-list")
    return {
        "items": [{"message": m, "runs": bell.run_links(m)} for m in page.messages],
        "older_url": f"{base}?before={page.older}" if page.older else "",
        "first_url": "" if page.first else base,
        "unread": bell.unread_count(request.user),
        "bell_cap": bell.BELL_CAP,
        "nav": "notifications",
    }


@never_cache
@console_login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    """The person's in-app notifications, newest first, in keyset pages."""
    context = _list_context(request)
    if wants_fragment(request) and request.htmx.target == "notification-list":
        return TemplateResponse(request, f"{LIST_TEMPLATE}#notification-list", context)
    return TemplateResponse(request, LIST_TEMPLATE, context)


@never_cache
@console_login_required
@require_GET
def notification_bell(request: HttpRequest) -> HttpResponse:
    """The bell's count alone: what the page polls while its socket cannot connect (with
    ``?poll=1`` the answer keeps polling; a push, once the socket is back, stops it)."""
    context = bell.bell_context(request.user)
    context["polling"] = request.GET.get("poll") == "1"
    return TemplateResponse(request, "notifications/_bell.html#notifications-bell", context)


@console_login_required
@require_POST
def notification_read(request: HttpRequest, message_id: int) -> HttpResponse:
    message = _get_message_for_user(request, message_id)
    bell.mark_read(request.user, message.pk)
    if not request.htmx:
        return redirect(_back_to_list(request))
    message.refresh_from_db()
    context = {"item": {"message": message, "runs": bell.run_links(message)}}
    # The item itself, and the bell of this page out of band.
    item = render_to_string(f"{LIST_TEMPLATE}#notification-item", context, request=request)
    return HttpResponse(item + bell.render_bell(request.user))


@console_login_required
@require_POST
def notification_read_all(request: HttpRequest) -> HttpResponse:
    done = bell.mark_all_read(request.user)
    messages.success(
        request,
        f"Marked {done} notification{'s' if done != 1 else ''} read."
        if done
        else "Nothing was unread.",
    )
    if not request.htmx:
        return redirect(_back_to_list(request))
    return render_fragments(
        request,
        LIST_TEMPLATE,
        "notification-list",
        _list_context(request),
        extra=bell.render_bell(request.user),
    )


def _back_to_list(request: HttpRequest) -> str:
    """The list page the form was on (its cursor is checked by the list, never trusted)."""
    before = request.POST.get("before", "")
    base = reverse("notification-list")
    return f"{base}?before={before}" if bell.decode_cursor(before) else base


# --- preferences --------------------------------------------------------------------------
def _rows(request: HttpRequest, data: Any = None) -> list[PreferenceRowForm]:
    resolver = Resolver()
    return [
        PreferenceRowForm(
            data,
            event_type=event_type,
            channel=channel,
            current=effective(request.user, event_type, channel, resolver=resolver),
        )
        for event_type in EventType.values
        for channel in Channel.values
    ]


def _prefs_context(
    request: HttpRequest, rows: list[PreferenceRowForm], settings_form: SettingsForm
) -> dict[str, Any]:
    by_type: dict[str, list[PreferenceRowForm]] = {}
    for form in rows:
        by_type.setdefault(form.event_type, []).append(form)
    groups = [
        {"event_type": t, "label": EventType(t).label, "rows": forms}
        for t, forms in by_type.items()
    ]
    return {
        "groups": groups,
        "settings_form": settings_form,
        "endpoint": settings_form.endpoint,
        "has_errors": any(f.errors for f in rows) or bool(settings_form.errors),
        "error_links": _error_links([*rows, settings_form]),
        "nav": "notifications",
    }


def _error_links(forms: list[Any]) -> list[dict[str, str]]:
    """Each field error once, linked to its field: the page is long, the summary on top."""
    links = []
    for form in forms:
        for name, errors in form.errors.items():
            if name in form.fields:
                bound = form[name]
                links.append({"id": bound.id_for_label, "label": bound.label, "message": errors[0]})
            else:
                links.append({"id": "", "label": "The form", "message": errors[0]})
    return links


@never_cache
@console_login_required
@require_http_methods(["GET", "POST"])
def notification_preferences(request: HttpRequest) -> HttpResponse:
    """What the person wants to hear, by event type and channel, and their settings."""
    if request.method == "GET":
        rows, settings_form = _rows(request), SettingsForm(user=request.user)
        return TemplateResponse(
            request, PREFS_TEMPLATE, _prefs_context(request, rows, settings_form)
        )
    rows = _rows(request, request.POST)
    settings_form = SettingsForm(request.POST, user=request.user)
    valid = all([f.is_valid() for f in rows]) and settings_form.is_valid()
    if not valid:
        context = _prefs_context(request, rows, settings_form)
        return TemplateResponse(request, PREFS_TEMPLATE, context, status=422)
    changed = save_all(request.user, rows, settings_form)
    messages.success(
        request,
        "Preferences saved." if changed else "Settings saved; no notification choice changed.",
    )
    return redirect("notification-preferences")


# --- the mail viewer (staff) -----------------------------------------------------------------
def _staff_only(request: HttpRequest) -> None:
    if not (request.user.is_active and request.user.is_staff):
        raise Http404


def _get_email(request: HttpRequest, message_id: int) -> Message:
    _staff_only(request)
    return get_object_or_404(
        Message.objects.select_related("user", "run"), pk=message_id, channel=Channel.EMAIL
    )


@never_cache
@console_login_required
@require_GET
def mail_list(request: HttpRequest) -> HttpResponse:
    """Every email message, newest first (the embedded default stores them, sends none)."""
    _staff_only(request)
    qs = Message.objects.filter(channel=Channel.EMAIL).select_related("user")
    page = bell.page_of(qs, before=request.GET.get("before", ""), size=MAIL_PAGE_SIZE)
    base = reverse("mail-list")
    context = {
        "emails": page.messages,
        "older_url": f"{base}?before={page.older}" if page.older else "",
        "first_url": "" if page.first else base,
        "nav": "mail",
    }
    return TemplateResponse(request, "notifications/mail_list.html", context)


@never_cache
@console_login_required
@require_GET
def mail_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    email = _get_email(request, message_id)
    context = {
        "email": email,
        "attempts": list(email.deliveries.all()[:20]),
        "nav": "mail",
    }
    return TemplateResponse(request, "notifications/mail_detail.html", context)


@never_cache
@xframe_options_sameorigin
@console_login_required
@require_GET
def mail_html(request: HttpRequest, message_id: int) -> HttpResponse:
    """An email's HTML part as its own document, for the sandboxed frame of ``mail_detail``."""
    email = _get_email(request, message_id)
    response = HttpResponse(email.html or "", content_type="text/html; charset=utf-8")
    # Set here, so the site-wide policy (which forbids framing) does not replace it.
    response["Content-Security-Policy"] = MAIL_HTML_POLICY
    response["Referrer-Policy"] = "no-referrer"
    response["X-Content-Type-Options"] = "nosniff"
    return response
