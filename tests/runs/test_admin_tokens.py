"""API tokens and run callbacks in Django admin: listed, searched and filtered; the hash is
never shown or editable; tokens are never added here; revoking is an audited bulk action."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import SUCCESS
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs.api_models import ApiToken, RunCallback
from runs.models import Event, Run, Team
from tests.runs.api_support import ApiClient, assert_problem, member

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

CHANGELIST = reverse("admin:runs_apitoken_changelist")


def change_url(token: ApiToken) -> str:
    return reverse("admin:runs_apitoken_change", args=[token.pk])


@pytest.fixture
def tokens(team: Team, other_team: Team) -> dict[str, tuple[ApiToken, str]]:
    alice, bob = member("alice", team), member("bob", other_team)
    return {
        "ci": ApiToken.mint(user=alice, team=team, name="ci deploys"),
        "laptop": ApiToken.mint(user=alice, team=team, name="laptop"),
        "bob": ApiToken.mint(user=bob, team=other_team, name="bob's import"),
    }


def listed(response: Any) -> set[str]:
    return {t.name for t in response.context["cl"].result_list}


def test_list_search_and_filter(admin_client: Client, tokens: Any, other_team: Team) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == {"ci deploys", "laptop", "bob's import"}
    html = response.content.decode()
    for token, _ in tokens.values():
        assert f"ao_{token.prefix}_…" in html
    assert listed(admin_client.get(CHANGELIST, {"q": "alice"})) == {"ci deploys", "laptop"}
    assert listed(admin_client.get(CHANGELIST, {"q": tokens["ci"][0].prefix})) == {"ci deploys"}
    assert listed(admin_client.get(CHANGELIST, {"team__id__exact": other_team.pk})) == {
        "bob's import"
    }
    tokens["laptop"][0].revoke()
    assert listed(admin_client.get(CHANGELIST, {"state": "revoked"})) == {"laptop"}
    assert listed(admin_client.get(CHANGELIST, {"state": "active"})) == {
        "ci deploys",
        "bob's import",
    }


def test_the_hash_is_never_shown_or_searchable(admin_client: Client, tokens: Any) -> None:
    token, text = tokens["ci"]
    for page in (CHANGELIST, change_url(token)):
        html = admin_client.get(page).content.decode()
        assert token.secret_hash not in html
        assert "secret_hash" not in html and text.split("_", 2)[2] not in html
    assert listed(admin_client.get(CHANGELIST, {"q": token.secret_hash[:16]})) == set()


def test_no_add_form_and_a_read_only_change_page(admin_client: Client, tokens: Any) -> None:
    assert admin_client.get(reverse("admin:runs_apitoken_add")).status_code == 403
    token, _ = tokens["ci"]
    page = admin_client.get(change_url(token))
    assert page.status_code == 200
    assert 'name="name"' not in page.content.decode()  # no input: nothing to edit
    admin_client.post(change_url(token), {"name": "renamed", "secret_hash": "0" * 64})
    fresh = ApiToken.objects.get(pk=token.pk)
    assert (fresh.name, fresh.secret_hash) == ("ci deploys", token.secret_hash)
    assert "delete_selected" not in admin_client.get(CHANGELIST).content.decode()


def test_revoke_action_revokes_records_and_reports(
    admin_client: Client, admin_user: User, tokens: Any
) -> None:
    (ci, ci_text), (laptop, _), (_, bob_text) = tokens["ci"], tokens["laptop"], tokens["bob"]
    laptop.revoke()
    response = admin_client.post(
        CHANGELIST,
        {"action": "revoke_tokens", "_selected_action": [ci.pk, laptop.pk]},
        follow=True,
    )
    assert [(m.level, str(m)) for m in response.context["messages"]] == [
        (SUCCESS, "1 token was revoked. 1 already revoked.")
    ]
    assert ApiToken.objects.get(pk=ci.pk).revoked_at is not None
    assert_problem(ApiClient(ci_text).get("/api/v1/runs"), 401)
    assert ApiClient(bob_text).get("/api/v1/runs").status_code == 200  # not selected
    events = list(Event.objects.filter(kind="token.revoked"))
    assert [(e.actor, e.data["prefix"], e.chain) for e in events] == [
        (f"admin:{admin_user.username}", ci.prefix, "team:default")
    ]


def test_view_only_staff_cannot_revoke(tokens: Any) -> None:
    staff = User.objects.create_user("auditor", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client = Client()
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 200
    ci, _ = tokens["ci"]
    client.post(CHANGELIST, {"action": "revoke_tokens", "_selected_action": [ci.pk]})
    assert ApiToken.objects.get(pk=ci.pk).revoked_at is None


def test_run_callbacks_are_shown_read_only(admin_client: Client, team: Team) -> None:
    run = Run.start("t-steps", {"n": 1}, team=team, actor="t")[0]
    callback = RunCallback.objects.create(
        run=run, url="https://hooks.example.com/done?<b>x</b>", created_at=timezone.now()
    )
    changelist = admin_client.get(reverse("admin:runs_runcallback_changelist"))
    assert changelist.status_code == 200
    assert "&lt;b&gt;x&lt;/b&gt;" in changelist.content.decode()
    assert "<b>x</b>" not in changelist.content.decode()
    change = reverse("admin:runs_runcallback_change", args=[callback.pk])
    assert admin_client.get(change).status_code == 200
    admin_client.post(change, {"url": "https://evil.example.com/"})
    assert RunCallback.objects.get().url == callback.url
    assert admin_client.get(reverse("admin:runs_runcallback_add")).status_code == 403
