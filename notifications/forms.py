"""The forms of the preferences page: one row per event type and channel, and the settings
across them (pause-all, pace, quiet hours, time zone, the person's webhook).

Invariants:
- nothing reaches ``preferences.save`` or the settings row unless every form on the page is
  valid: choices are checked against the registered workflows and the model's choices,
  numbers against their bounds, the time zone against the zone database, the webhook URL by
  the same check as run callbacks (no link-local, metadata or — unless allowed — private
  addresses);
- a row the person did not change is not stored, so it keeps following the team default (or
  the default) when that changes; a row marked "use the default" stops being theirs.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction

from notifications.models import (
    APPROVER_TYPES,
    Channel,
    EventType,
    NotificationSettings,
    Preference,
    Scope,
    WebhookEndpoint,
)
from runs.api.callbacks import validate_callback_url
from runs.api.problems import CallbackUrlInvalid
from runs.workflow import all_workflows

#: The longest digest period a person may choose (a week), in minutes.
MAX_DIGEST_MINUTES = 7 * 24 * 60
#: The longest minimum interval between two messages on a channel (a day), in seconds.
MAX_INTERVAL_SECONDS = 86_400
NOW, DIGEST = "now", "digest"


@cache
def timezone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(available_timezones())]


def _field_prefix(event_type: str, channel: str) -> str:
    return f"p-{event_type.replace('.', '_')}-{channel}"


class PreferenceRowForm(forms.Form):
    """What one person wants for one event type on one channel."""

    enabled = forms.BooleanField(required=False, label="On")
    scope = forms.ChoiceField(choices=Scope.choices, label="About")
    workflows = forms.MultipleChoiceField(
        required=False,
        label="Workflows",
        widget=forms.SelectMultiple(attrs={"size": 3}),
    )
    when = forms.ChoiceField(
        choices=[(NOW, "As it happens"), (DIGEST, "In a digest")], label="When"
    )
    digest_minutes = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_DIGEST_MINUTES,
        label="Every (minutes)",
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_DIGEST_MINUTES, "size": 5}),
    )
    reset = forms.BooleanField(required=False, label="Use the default")

    def __init__(
        self, *args: Any, event_type: str, channel: str, current: dict[str, Any], **kwargs: Any
    ) -> None:
        self.event_type, self.channel, self.current = event_type, channel, current
        minutes = int(current["digest_minutes"] or 0)
        kwargs.setdefault(
            "initial",
            {
                "enabled": current["enabled"],
                "scope": current["scope"],
                "workflows": list(current["workflows"] or []),
                "when": DIGEST if minutes else NOW,
                "digest_minutes": minutes or None,
            },
        )
        super().__init__(*args, prefix=_field_prefix(event_type, channel), **kwargs)
        names = [w.name for w in all_workflows()]
        # A workflow chosen earlier but no longer registered stays choosable, so saving the
        # page again does not fail on it; the person can drop it.
        gone = [n for n in current["workflows"] or [] if isinstance(n, str) and n not in names]
        self.fields["workflows"].choices = [(n, n) for n in names] + [
            (n, f"{n} (no longer registered)") for n in gone
        ]
        what = f"{EventType(event_type).label} by {Channel(channel).label.lower()}"
        for name, field in self.fields.items():
            field.label = f"{what}: {field.label}"
            field.widget.attrs.setdefault("data-field", name)
        if self.scope_applies is False:
            # Approval requests go to whoever may decide them: the scope does not apply.
            del self.fields["scope"], self.fields["workflows"]
        if current["source"] != "yours":
            del self.fields["reset"]

    @property
    def scope_applies(self) -> bool:
        return self.event_type not in APPROVER_TYPES

    @property
    def channel_label(self) -> str:
        return str(Channel(self.channel).label)

    @property
    def may_reset(self) -> bool:
        return "reset" in self.fields

    @property
    def source(self) -> str:
        return str(self.current["source"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (
            self.scope_applies
            and data.get("scope") == Scope.WORKFLOWS
            and not data.get("workflows")
        ):
            self.add_error("workflows", "Choose at least one workflow, or another scope.")
        if data.get("when") == DIGEST and not data.get("digest_minutes"):
            if "digest_minutes" not in self.errors:
                self.add_error("digest_minutes", "Say how often the digest comes, in minutes.")
        return data

    def row(self) -> dict[str, Any]:
        """The choice as ``preferences.save`` takes it (valid forms only)."""
        data = self.cleaned_data
        if self.scope_applies:
            scope = data["scope"]
            workflows = sorted(data["workflows"]) if scope == Scope.WORKFLOWS else []
        else:
            scope, workflows = self.current["scope"], list(self.current["workflows"] or [])
        return {
            "event_type": self.event_type,
            "channel": self.channel,
            "enabled": bool(data["enabled"]),
            "scope": scope,
            "workflows": workflows,
            "digest_minutes": int(data["digest_minutes"] or 0) if data["when"] == DIGEST else 0,
        }

    def changed(self) -> bool:
        """Whether the submitted row differs from what applies now."""
        row, cur = self.row(), self.current
        return (
            row["enabled"] != bool(cur["enabled"])
            or row["scope"] != cur["scope"]
            or sorted(row["workflows"]) != sorted(cur["workflows"] or [])
            or row["digest_minutes"] != int(cur["digest_minutes"] or 0)
        )

    @property
    def resetting(self) -> bool:
        return bool(self.cleaned_data.get("reset"))


class SettingsForm(forms.Form):
    """A person's settings across event types."""

    paused = forms.BooleanField(
        required=False,
        label="Pause all notifications",
        help_text="Nothing is sent while paused; what happens meanwhile is dropped, not queued.",
    )
    min_interval_seconds = forms.IntegerField(
        min_value=0,
        max_value=MAX_INTERVAL_SECONDS,
        label="Minimum interval (seconds)",
        help_text="At most one message per channel this often; the rest wait and go out "
        f"together. 0 to {MAX_INTERVAL_SECONDS:,}.",
    )
    quiet_start = forms.TimeField(
        required=False,
        label="Quiet hours from",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    quiet_end = forms.TimeField(
        required=False,
        label="Quiet hours until",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        help_text="Email and webhook messages wait until the end; the in-app list is silent "
        "anyway. Leave both empty for none.",
    )
    timezone = forms.ChoiceField(
        label="Time zone", help_text="Your quiet hours are in this time zone."
    )
    webhook_url = forms.CharField(
        required=False,
        max_length=2000,
        label="Your webhook URL",
        help_text="An http(s) URL we POST signed notifications to (turn the webhook channel on "
        "above). Empty: no webhook.",
        widget=forms.URLInput(attrs={"size": 60, "autocomplete": "off"}),
    )
    webhook_enable = forms.BooleanField(
        required=False,
        label="Enable the webhook again",
        help_text="It was disabled after failed deliveries; tick to try it again.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        self.user = user
        self.settings_row = NotificationSettings.of(user.pk)
        endpoint = self.settings_row.webhook
        self.endpoint = endpoint if endpoint is not None and endpoint.user_id == user.pk else None
        row = self.settings_row
        kwargs.setdefault(
            "initial",
            {
                "paused": row.paused,
                "min_interval_seconds": row.min_interval_seconds,
                "quiet_start": row.quiet_start,
                "quiet_end": row.quiet_end,
                "timezone": row.timezone or "UTC",
                "webhook_url": endpoint.url if endpoint is not None else "",
            },
        )
        super().__init__(*args, prefix="s", **kwargs)
        self.fields["timezone"].choices = timezone_choices()
        if endpoint is None or endpoint.enabled:
            del self.fields["webhook_enable"]

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"].strip()
        if not url:
            return ""
        current = self.settings_row.webhook
        if current is not None and current.url == url:
            return url  # unchanged: not resolved again on every save of the page
        try:
            return validate_callback_url(url)
        except CallbackUrlInvalid as exc:
            raise ValidationError(str(exc).removeprefix("callback_url: ")) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("quiet_start"), data.get("quiet_end")
        if (start is None) != (end is None) and not (
            {"quiet_start", "quiet_end"} & set(self.errors)
        ):
            self.add_error(
                "quiet_end" if start is not None else "quiet_start",
                "Give both the start and the end of your quiet hours, or neither.",
            )
        elif start is not None and start == end:
            self.add_error("quiet_end", "The quiet hours end when they start: give another end.")
        return data

    def save(self) -> None:
        """Store the settings and the person's webhook endpoint (valid forms only)."""
        data = self.cleaned_data
        row = NotificationSettings.objects.select_for_update().filter(user=self.user).first()
        row = row or NotificationSettings(user=self.user)
        current = row.webhook
        own = current if current is not None and current.user_id == self.user.pk else None
        url = data["webhook_url"]
        if not url:
            if own is not None:
                own.delete()  # the person removed it: nothing of theirs points there any more
            row.webhook = None
        elif current is not None and current.url == url:
            if own is not None and data.get("webhook_enable"):
                WebhookEndpoint.objects.filter(pk=own.pk).update(
                    enabled=True, consecutive_failures=0, disabled_reason=""
                )
        elif own is not None:
            # Another URL is another receiver: it starts with a clean record.
            WebhookEndpoint.objects.filter(pk=own.pk).update(
                url=url, enabled=True, consecutive_failures=0, disabled_reason=""
            )
        else:
            row.webhook = WebhookEndpoint.objects.create(
                user=self.user, url=url, description="personal webhook"
            )
        row.paused = data["paused"]
        row.min_interval_seconds = data["min_interval_seconds"]
        row.quiet_start = data["quiet_start"]
        row.quiet_end = data["quiet_end"]
        row.timezone = data["timezone"]
        row.save()


def save_all(user: Any, rows: list[PreferenceRowForm], settings_form: SettingsForm) -> int:
    """Store a valid page in one transaction; returns how many rows changed."""
    from notifications import preferences

    changed = [f.row() for f in rows if not f.resetting and f.changed()]
    resets = [f for f in rows if f.resetting]
    with transaction.atomic():
        if changed:
            preferences.save(user, changed)
        for f in resets:
            Preference.objects.filter(
                user=user, event_type=f.event_type, channel=f.channel
            ).delete()
        settings_form.save()
    return len(changed) + len(resets)
