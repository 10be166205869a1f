"""The preferences page: each person sees and changes only their own choices; every value says
where it comes from; bad input is refused at its field and nothing is saved; a row left alone
keeps following the team default."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from notifications import preferences
from notifications.models import (
    Channel,
    EventType,
    NotificationSettings,
    Preference,
    Scope,
    TeamDefault,
    WebhookEndpoint,
)
from runs.models import Team
from tests.notifications.form_support import FormData, form_data
from tests.notifications.support import People, make_people

pytestmark = [pytest.mark.django_db]

URL = "/notifications/preferences/"
PUBLIC_HOOK = "https://93.184.215.14/hooks/agentops"  # an address literal: no DNS needed


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


def client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def field(event_type: str, channel: str, name: str) -> str:
    return f"p-{event_type.replace('.', '_')}-{channel}-{name}"


def page_form(client: Client) -> FormData:
    page = client.get(URL)
    assert page.status_code == 200
    return form_data(page.content.decode(), URL)


def source_of(html: str, event_type: str, channel: str) -> str:
    """The "From" cell of one row (the row holds the row's enabled checkbox)."""
    rows = re.findall(r"<tr class=\"pref-row\">(.*?)</tr>", html, re.S)
    for row in rows:
        if f'name="{field(event_type, channel, "enabled")}"' in row:
            found = re.search(r'<span class="source [^"]+">([^<]+)</span>', row)
            assert found
            return found.group(1)
    raise AssertionError(f"no row for {event_type} by {channel}")


def errors_at(html: str, name: str) -> list[str]:
    """The errors shown right at field ``name`` (the list whose id follows the field's id)."""
    found = re.search(
        rf'<ul class="errors" id="id_{re.escape(name)}_errors"[^>]*>(.*?)</ul>', html, re.S
    )
    return re.findall(r"<li>(.*?)</li>", found.group(1)) if found else []


def post(client: Client, changes: dict[str, Any], *, drop: tuple[str, ...] = ()) -> Any:
    data = page_form(client)
    for name in drop:
        data.pop(name, None)
    data.update(changes)
    return client.post(URL, data)


def test_the_page_needs_a_sign_in(client: Client) -> None:
    assert client.get(URL).status_code == 302
    assert client.post(URL, {}).status_code == 302


def test_every_value_says_where_it_comes_from(people, team) -> None:
    TeamDefault.objects.create(
        team=team, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL, digest_minutes=30
    )
    Preference.objects.create(
        user=people.owner, event_type=EventType.RUN_PAUSED, channel=Channel.IN_APP, enabled=False
    )
    html = client_of(people.owner).get(URL).content.decode()
    assert source_of(html, EventType.RUN_FAILED, Channel.EMAIL) == "team default"
    assert source_of(html, EventType.RUN_PAUSED, Channel.IN_APP) == "yours"
    assert source_of(html, EventType.RUN_SUCCEEDED, Channel.EMAIL) == "default"
    # The team default's digest is what the form starts from.
    data = form_data(html, URL)
    assert data[field(EventType.RUN_FAILED, Channel.EMAIL, "when")] == "digest"
    assert data[field(EventType.RUN_FAILED, Channel.EMAIL, "digest_minutes")] == "30"
    assert field(EventType.RUN_PAUSED, Channel.IN_APP, "enabled") not in data
    # Only a row of one's own can go back to the default.
    assert field(EventType.RUN_PAUSED, Channel.IN_APP, "reset") in html
    assert field(EventType.RUN_FAILED, Channel.EMAIL, "reset") not in html
    # Approval requests go to whoever may decide them: no scope to choose.
    assert field(EventType.APPROVAL_REQUESTED, Channel.EMAIL, "scope") not in html
    assert field(EventType.RUN_FAILED, Channel.EMAIL, "scope") in html
    # The registered workflows are offered.
    assert '<option value="t-steps">t-steps</option>' in html


def test_saving_stores_only_what_changed(people, team) -> None:
    TeamDefault.objects.create(
        team=team, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL, digest_minutes=30
    )
    owner = client_of(people.owner)
    response = post(
        owner,
        {
            field(EventType.RUN_SUCCEEDED, Channel.EMAIL, "scope"): Scope.WORKFLOWS,
            field(EventType.RUN_SUCCEEDED, Channel.EMAIL, "workflows"): ["t-steps", "t-noop"],
            field(EventType.BUDGET_WARNING, Channel.IN_APP, "when"): "digest",
            field(EventType.BUDGET_WARNING, Channel.IN_APP, "digest_minutes"): "15",
            "s-min_interval_seconds": "300",
            "s-quiet_start": "22:00",
            "s-quiet_end": "07:30",
            "s-timezone": "Europe/Berlin",
            "s-paused": "on",
        },
        drop=(field(EventType.RUN_PAUSED, Channel.EMAIL, "enabled"),),  # untick
    )
    assert response.status_code == 302 and response["Location"] == URL
    stored = {(p.event_type, p.channel): p for p in Preference.objects.filter(user=people.owner)}
    assert set(stored) == {
        (EventType.RUN_SUCCEEDED, Channel.EMAIL),
        (EventType.BUDGET_WARNING, Channel.IN_APP),
        (EventType.RUN_PAUSED, Channel.EMAIL),
    }
    succeeded = stored[(EventType.RUN_SUCCEEDED, Channel.EMAIL)]
    assert (succeeded.scope, sorted(succeeded.workflows)) == (
        Scope.WORKFLOWS,
        ["t-noop", "t-steps"],
    )
    assert stored[(EventType.BUDGET_WARNING, Channel.IN_APP)].digest_minutes == 15
    assert stored[(EventType.RUN_PAUSED, Channel.EMAIL)].enabled is False
    # The row left alone still follows the team default.
    assert preferences.effective(people.owner, EventType.RUN_FAILED, Channel.EMAIL)["source"] == (
        "team default"
    )
    s = NotificationSettings.objects.get(user=people.owner)
    assert (s.paused, s.min_interval_seconds, s.timezone) == (True, 300, "Europe/Berlin")
    assert (s.quiet_start, s.quiet_end) == (time(22, 0), time(7, 30))
    page = owner.get(URL).content.decode()
    assert "Preferences saved." in page
    assert source_of(page, EventType.RUN_SUCCEEDED, Channel.EMAIL) == "yours"
    assert 'value="t-steps" selected' in page
    # Nothing of the owner's reached anyone else.
    assert not Preference.objects.exclude(user=people.owner).exists()
    assert not NotificationSettings.objects.exclude(user=people.owner).exists()


def test_a_row_of_ones_own_can_follow_the_default_again(people, team) -> None:
    TeamDefault.objects.create(
        team=team, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL, enabled=False
    )
    Preference.objects.create(
        user=people.owner, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL, enabled=True
    )
    owner = client_of(people.owner)
    response = post(owner, {field(EventType.RUN_FAILED, Channel.EMAIL, "reset"): "on"})
    assert response.status_code == 302
    assert not Preference.objects.filter(user=people.owner).exists()
    assert source_of(owner.get(URL).content.decode(), EventType.RUN_FAILED, Channel.EMAIL) == (
        "team default"
    )


BAD_INPUTS = [
    # (changes, the field that must carry the error, words of the error)
    (
        {field(EventType.RUN_FAILED, Channel.EMAIL, "scope"): Scope.WORKFLOWS},
        field(EventType.RUN_FAILED, Channel.EMAIL, "workflows"),
        "Choose at least one workflow",
    ),
    (
        {
            field(EventType.RUN_FAILED, Channel.EMAIL, "scope"): Scope.WORKFLOWS,
            field(EventType.RUN_FAILED, Channel.EMAIL, "workflows"): ["no-such-workflow"],
        },
        field(EventType.RUN_FAILED, Channel.EMAIL, "workflows"),
        "not one of the available choices",
    ),
    (
        {field(EventType.RUN_FAILED, Channel.EMAIL, "scope"): "everyone"},
        field(EventType.RUN_FAILED, Channel.EMAIL, "scope"),
        "not one of the available choices",
    ),
    (
        {field(EventType.RUN_FAILED, Channel.IN_APP, "when"): "digest"},
        field(EventType.RUN_FAILED, Channel.IN_APP, "digest_minutes"),
        "how often the digest comes",
    ),
    (
        {
            field(EventType.RUN_FAILED, Channel.IN_APP, "when"): "digest",
            field(EventType.RUN_FAILED, Channel.IN_APP, "digest_minutes"): "0",
        },
        field(EventType.RUN_FAILED, Channel.IN_APP, "digest_minutes"),
        "greater than or equal to 1",
    ),
    (
        {
            field(EventType.RUN_FAILED, Channel.IN_APP, "when"): "digest",
            field(EventType.RUN_FAILED, Channel.IN_APP, "digest_minutes"): "99999",
        },
        field(EventType.RUN_FAILED, Channel.IN_APP, "digest_minutes"),
        "less than or equal to 10080",
    ),
    ({"s-min_interval_seconds": "-1"}, "s-min_interval_seconds", "greater than or equal to 0"),
    ({"s-min_interval_seconds": "86401"}, "s-min_interval_seconds", "less than or equal to 86400"),
    ({"s-min_interval_seconds": "soon"}, "s-min_interval_seconds", "Enter a whole number"),
    ({"s-timezone": "Mars/Olympus_Mons"}, "s-timezone", "not one of the available choices"),
    ({"s-quiet_start": "22:00", "s-quiet_end": ""}, "s-quiet_end", "Give both the start"),
    ({"s-quiet_start": "", "s-quiet_end": "06:00"}, "s-quiet_start", "Give both the start"),
    ({"s-quiet_start": "22:00", "s-quiet_end": "22:00"}, "s-quiet_end", "end when they start"),
    ({"s-quiet_start": "25:99", "s-quiet_end": "06:00"}, "s-quiet_start", "Enter a valid time"),
    ({"s-webhook_url": "ftp://example.com/x"}, "s-webhook_url", "only http:// and https://"),
    ({"s-webhook_url": "http://127.0.0.1:8000/hook"}, "s-webhook_url", "loopback address"),
    ({"s-webhook_url": "http://169.254.169.254/latest"}, "s-webhook_url", "metadata service"),
    ({"s-webhook_url": "https://user:pw@93.184.215.14/"}, "s-webhook_url", "credentials"),
]


@pytest.mark.parametrize(("changes", "name", "words"), BAD_INPUTS)
def test_bad_input_is_refused_at_its_field_and_nothing_is_saved(
    people, changes: dict[str, Any], name: str, words: str
) -> None:
    owner = client_of(people.owner)
    # A valid change on the same page must not be saved either.
    good = {field(EventType.RUN_SUCCEEDED, Channel.IN_APP, "when"): "digest"}
    good[field(EventType.RUN_SUCCEEDED, Channel.IN_APP, "digest_minutes")] = "10"
    response = post(owner, {**good, **changes})
    assert response.status_code == 422
    html = response.content.decode()
    shown = errors_at(html, name)
    assert any(words in e for e in shown), (name, shown)
    assert "Nothing was saved" in html
    assert f'<a href="#id_{name}">' in html  # the summary on top links to the field
    assert f'id="id_{name}"' in html and "aria-invalid" in html
    assert not Preference.objects.exists()
    assert not NotificationSettings.objects.exists()
    assert not WebhookEndpoint.objects.exists()


def test_a_webhook_is_registered_shown_re_enabled_and_removed(people) -> None:
    owner = client_of(people.owner)
    assert post(owner, {"s-webhook_url": PUBLIC_HOOK}).status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.user, endpoint.url, endpoint.enabled) == (people.owner, PUBLIC_HOOK, True)
    assert NotificationSettings.objects.get(user=people.owner).webhook == endpoint
    html = owner.get(URL).content.decode()
    assert endpoint.secret in html  # its owner needs it to check signatures
    # Nobody else sees it.
    other = client_of(people.mate).get(URL).content.decode()
    assert PUBLIC_HOOK not in other and endpoint.secret not in other

    # Disabled by failures: the page says why and offers to try again.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, consecutive_failures=10, disabled_reason="10 failed deliveries in a row"
    )
    html = owner.get(URL).content.decode()
    assert "Disabled: 10 failed deliveries in a row" in html
    assert post(owner, {}).status_code == 302  # saving without ticking leaves it disabled
    assert WebhookEndpoint.objects.get().enabled is False
    assert post(owner, {"s-webhook_enable": "on"}).status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.consecutive_failures, endpoint.disabled_reason) == (
        True,
        0,
        "",
    )

    # Another URL is another receiver: the same row, a clean record.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=3)
    other_url = "https://93.184.215.15/other"
    assert post(owner, {"s-webhook_url": other_url}).status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.consecutive_failures) == (other_url, 0)

    assert post(owner, {"s-webhook_url": ""}).status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert NotificationSettings.objects.get(user=people.owner).webhook is None


@override_settings(AGENTOPS_ALLOW_PRIVATE_CALLBACKS=True)
def test_private_webhooks_follow_the_callback_setting(people) -> None:
    owner = client_of(people.owner)
    assert post(owner, {"s-webhook_url": "http://127.0.0.1:9/hook"}).status_code == 302
    assert WebhookEndpoint.objects.get().url == "http://127.0.0.1:9/hook"
    response = post(owner, {"s-webhook_url": "http://169.254.169.254/"})
    assert response.status_code == 422  # link-local: never


def test_the_form_needs_its_csrf_token(people) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.owner)
    data = form_data(client.get(URL).content.decode(), URL)
    data.pop("csrfmiddlewaretoken")
    assert client.post(URL, data).status_code == 403
    assert not NotificationSettings.objects.exists()


def test_the_page_reads_each_table_once_not_once_a_row(people, team, other_team) -> None:
    """Every row asks for its effective choice: one resolver answers all of them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for t in (team, other_team):
        TeamDefault.objects.create(
            team=t, event_type=EventType.RUN_FAILED, channel=Channel.EMAIL, digest_minutes=30
        )
    Preference.objects.create(
        user=people.owner, event_type=EventType.RUN_PAUSED, channel=Channel.IN_APP, enabled=False
    )
    client = client_of(people.owner)
    client.get(URL)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL).status_code == 200
    rows = len(EventType.values) * len(Channel.values)
    assert rows >= 30 and len(queries) <= 12  # the session, the user, the nav, the choices
