"""Admin for notifications: the choices (people's and the teams' defaults), the outbox, every
message with its delivery attempts, webhook endpoints and the addresses the ESP refused.

Invariants the admin keeps:
- notifications, messages and delivery attempts are written by the fan-out, the batching and
  the delivery only: shown here, never added, changed or deleted; one operation, redeliver,
  sends selected messages again through ``notifications.delivery.redeliver`` with the admin as
  actor (messages a worker is sending right now are left alone);
- team defaults, people's choices and settings, endpoints and addresses are edited here, and
  validated like the preferences page validates them (registered workflows only);
- message text is agent output: it is shown escaped, and an email's HTML part only through
  the console's sandboxed mail viewer, never rendered into an admin page.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from notifications.delivery import redeliver
from notifications.models import (
    Address,
    DeliveryAttempt,
    Message,
    Notification,
    NotificationSettings,
    Preference,
    Presence,
    Scope,
    TeamDefault,
    WebhookEndpoint,
)
from runs.admin.base import ReadOnlyAdminMixin, RunReadOnlyChildAdmin, admin_actor
from runs.admin.display import EMPTY, json_field
from runs.api.callbacks import validate_callback_url
from runs.api.problems import CallbackUrlInvalid
from runs.workflow import all_workflows

#: At most this many messages are redelivered by one action (each is its own UPDATE + ring).
REDELIVER_LIMIT = 500
#: Longest message text shown on its admin page.
TEXT_LIMIT = 20_000


# --- choices: people's and the teams' defaults --------------------------------------------
class PreferenceAdminForm(forms.ModelForm):
    """The workflows of a choice picked from the registered ones (plus any chosen earlier)."""

    workflows = forms.MultipleChoiceField(
        required=False,
        help_text="With the 'chosen workflows' scope: their names.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [w.name for w in all_workflows()]
        chosen = [n for n in (self.instance.workflows or []) if isinstance(n, str)]
        self.fields["workflows"].choices = [(n, n) for n in names] + [
            (n, f"{n} (no longer registered)") for n in chosen if n not in names
        ]
        self.initial.setdefault("workflows", chosen)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("scope") == Scope.WORKFLOWS and not data.get("workflows"):
            self.add_error("workflows", "Choose at least one workflow, or another scope.")
        if data.get("scope") != Scope.WORKFLOWS:
            data["workflows"] = []
        return data


PREFERENCE_FIELDS = ["event_type", "channel", "enabled", "scope", "workflows", "digest_minutes"]


@admin.register(TeamDefault)
class TeamDefaultAdmin(admin.ModelAdmin):
    """A team's defaults, for its members who have not chosen themselves."""

    form = PreferenceAdminForm
    list_display = ["team", "event_type", "channel", "enabled", "scope", "digest_minutes"]
    list_filter = ["event_type", "channel", "enabled", "scope"]
    search_fields = ["team__slug", "team__name"]
    list_select_related = ["team"]
    autocomplete_fields = ["team"]
    fields = ["team", *PREFERENCE_FIELDS]


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    form = PreferenceAdminForm
    list_display = ["user", "event_type", "channel", "enabled", "scope", "digest_minutes"]
    list_filter = ["event_type", "channel", "enabled", "scope"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    fields = ["user", *PREFERENCE_FIELDS]


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    list_display = ["user", "paused", "min_interval_seconds", "quiet_hours", "timezone", "webhook"]
    list_filter = ["paused"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "webhook"]
    autocomplete_fields = ["user"]
    raw_id_fields = ["webhook"]

    @admin.display(description="quiet hours")
    def quiet_hours(self, obj: NotificationSettings) -> str:
        if obj.quiet_start is None or obj.quiet_end is None:
            return EMPTY
        return f"{obj.quiet_start:%H:%M} to {obj.quiet_end:%H:%M}"

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "timezone":
            from notifications.forms import timezone_choices

            return forms.ChoiceField(
                choices=timezone_choices(), initial="UTC", help_text=db_field.help_text
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)


# --- the outbox -------------------------------------------------------------------------------
@admin.register(Notification)
class NotificationAdmin(RunReadOnlyChildAdmin):
    list_display = [
        "event_type",
        "recipient",
        "channel",
        "status",
        "reason",
        "due_at",
        "run_link",
        "message_link",
        "created_at",
    ]
    list_filter = ["status", "channel", "event_type"]
    search_fields = ["user__username", "user__email", "=run__id", "dedup_key"]
    list_select_related = ["user", "endpoint", "run"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = readonly_fields = [
        "user",
        "endpoint",
        "channel",
        "event_type",
        "status",
        "reason",
        "due_at",
        "digest_minutes",
        "run",
        "team",
        "event_id",
        "dedup_key",
        "message",
        "created_at",
        "data_pretty",
    ]
    data_pretty = json_field("data")

    @admin.display(description="to")
    def recipient(self, obj: Notification) -> str:
        return str(obj.user) if obj.user_id else f"webhook {obj.endpoint}"

    @admin.display(description="message")
    def message_link(self, obj: Notification) -> SafeString | str:
        if obj.message_id is None:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:notifications_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{}</a>', url, obj.message_id)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    ordering = ["-at", "-id"]
    fields = readonly_fields = ["at", "ok", "permanent", "status_code", "duration_ms", "error"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class UnreadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "read"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Unread (in-app)"), ("yes", "Read")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        if self.value() == "no":
            return queryset.filter(channel="in_app", read_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(read_at__isnull=False)
        return queryset


@admin.register(Message)
class MessageAdmin(RunReadOnlyChildAdmin):
    list_display = [
        "subject",
        "recipient",
        "channel",
        "status",
        "count",
        "attempts",
        "created_at",
        "sent_at",
        "read_at",
    ]
    list_filter = ["channel", "status", UnreadFilter, "created_at"]
    search_fields = ["user__username", "user__email", "subject", "destination"]
    list_select_related = ["user", "endpoint"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ["redeliver_messages"]
    inlines = [DeliveryAttemptInline]
    fields = readonly_fields = [
        "user",
        "endpoint",
        "channel",
        "status",
        "subject",
        "text_shown",
        "html_part",
        "count",
        "run_link",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "destination",
        "provider_id",
        "error",
        "fallback_of",
        "created_at",
        "sent_at",
        "read_at",
        "body_pretty",
    ]
    body_pretty = json_field("body")

    # A read-only change form; the model-level change permission (obj is None) gates the
    # redeliver action.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and request.user.has_perm("notifications.change_message")

    @admin.display(description="to")
    def recipient(self, obj: Message) -> str:
        if obj.user_id:
            return str(obj.user)
        return f"webhook {obj.endpoint}" if obj.endpoint_id else EMPTY

    @admin.display(description="text")
    def text_shown(self, obj: Message) -> SafeString:
        text = obj.text or ""
        more = len(text) - TEXT_LIMIT
        if more > 0:
            text = f"{text[:TEXT_LIMIT]}\n… ({more:,} more characters)"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)

    @admin.display(description="HTML part")
    def html_part(self, obj: Message) -> SafeString | str:
        if not obj.html:
            return EMPTY
        if obj.channel != "email":
            return f"{len(obj.html):,} characters"
        # Rendered only in the console's sandboxed frame, never in this page.
        url = reverse("mail-detail", args=[obj.pk])
        return format_html('<a href="{}">View it in the mail viewer</a>', url)

    @admin.action(description="Redeliver selected messages", permissions=["change"])
    def redeliver_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        now = timezone.now()
        busy = Q(status=Message.Status.SENDING, lease_until__gt=now)
        ids = list(queryset.values_list("pk", flat=True)[: REDELIVER_LIMIT + 1])
        capped = len(ids) > REDELIVER_LIMIT
        ids = ids[:REDELIVER_LIMIT]
        sending = set(Message.objects.filter(busy, pk__in=ids).values_list("pk", flat=True))
        actor = admin_actor(request)
        done = 0
        for message_id in ids:
            if message_id not in sending:
                redeliver(message_id, actor=actor)
                done += 1
        text = f"{done} message{'s' if done != 1 else ''} will be sent again."
        if sending:
            text += f" {len(sending)} being sent right now: try again in a minute."
        if capped:
            text += f" Only the first {REDELIVER_LIMIT} were taken: select fewer."
        self.message_user(request, text, level=messages.SUCCESS)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["message", "at", "ok", "permanent", "status_code", "duration_ms", "error"]
    list_filter = ["ok", "permanent", "at"]
    search_fields = ["=message__id"]
    list_select_related = ["message"]
    date_hierarchy = "at"
    show_full_result_count = False


# --- endpoints, addresses, presence ---------------------------------------------------------
class WebhookEndpointForm(forms.ModelForm):
    """The URL is checked as a run callback's is: the server must not be made to call into
    its own network (link-local and metadata always refused, private ones unless allowed)."""

    url = forms.CharField(max_length=2000, widget=forms.URLInput(attrs={"size": 80}))

    class Meta:
        model = WebhookEndpoint
        fields = ["user", "team", "url", "description", "enabled", "secret"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        if self.instance.pk and self.instance.url == url:
            return url  # unchanged: not resolved again
        try:
            return validate_callback_url(url)
        except CallbackUrlInvalid as exc:
            raise forms.ValidationError(str(exc).removeprefix("callback_url: ")) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("user") and not data.get("team"):
            raise forms.ValidationError("An endpoint belongs to a person or to a team.")
        return data


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = [
        "url",
        "owner",
        "enabled",
        "consecutive_failures",
        "disabled_reason",
        "created_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["url", "description", "user__username", "team__slug"]
    list_select_related = ["user", "team"]
    autocomplete_fields = ["user", "team"]
    # Counted by the delivery; an admin resets them with "re-enable", never by typing.
    readonly_fields = ["consecutive_failures", "disabled_reason", "created_at"]
    actions = ["re_enable"]

    @admin.display(description="owner")
    def owner(self, obj: WebhookEndpoint) -> str:
        if obj.user_id:
            return f"user {obj.user}"
        return f"team {obj.team}" if obj.team_id else EMPTY

    @admin.action(description="Re-enable selected endpoints", permissions=["change"])
    def re_enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        done = queryset.update(enabled=True, consecutive_failures=0, disabled_reason="")
        self.message_user(
            request,
            f"{done} endpoint{'s' if done != 1 else ''} enabled again.",
            level=messages.SUCCESS,
        )


@admin.register(Address)
class AddressAdmin(admin.ModelAdmin):
    """What the ESP reported about addresses: an undeliverable one gets no more email (the
    person hears in-app instead) until it is marked deliverable here."""

    list_display = ["email", "undeliverable", "reason", "detail_preview", "updated_at"]
    list_filter = ["undeliverable", "reason"]
    search_fields = ["email"]
    readonly_fields = ["updated_at"]
    actions = ["mark_deliverable"]

    @admin.display(description="why")
    def detail_preview(self, obj: Address) -> str:
        text = obj.detail or ""
        return text if len(text) <= 120 else f"{text[:120]}…"

    def save_model(self, request: HttpRequest, obj: Address, form: Any, change: bool) -> None:
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Mark deliverable again", permissions=["change"])
    def mark_deliverable(self, request: HttpRequest, queryset: QuerySet[Address]) -> None:
        done = queryset.update(undeliverable=False, updated_at=timezone.now())
        self.message_user(
            request,
            f"{done} address{'es' if done != 1 else ''} will get email again.",
            level=messages.SUCCESS,
        )


@admin.register(Presence)
class PresenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who has a run open in the console (emails about that run wait meanwhile)."""

    list_display = ["user", "run", "connections", "left_at", "updated_at"]
    list_filter = ["updated_at"]
    search_fields = ["user__username", "=run__id"]
    list_select_related = ["user", "run"]
    show_full_result_count = False
