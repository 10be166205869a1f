"""Who may call the API: tokens (scoped to a team, revocable), the console's session (with
CSRF), roles checked at the moment of each action, the per-token rate limit, and the
command that makes tokens."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from runs.api_models import ApiToken
from runs.models import Membership, Run
from tests.runs.api_support import ApiClient, assert_problem, member, set_role, token_client

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

Role = Membership.Role


@pytest.fixture(autouse=True)
def _fresh_rate_windows():
    cache.clear()
    yield
    cache.clear()


def _start(team, workflow: str = "t-steps") -> Run:
    return Run.start(workflow, {"n": 1}, team=team, actor="t")[0]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ao_deadbeef_not-the-secret"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer ao__"},
    ],
)
def test_missing_or_unknown_credentials_are_401(team, headers):
    _, text = ApiToken.mint(user=member("alice", team), team=team)
    r = ApiClient().get("/api/v1/runs", headers=headers)
    problem = assert_problem(r, 401)
    assert r["WWW-Authenticate"].startswith("Bearer")
    assert "token" in problem["detail"]
    assert ApiClient(text).get("/api/v1/runs").status_code == 200


def test_a_wrong_secret_with_a_real_prefix_is_401(team):
    token, text = ApiToken.mint(user=member("alice", team), team=team)
    forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    assert_problem(ApiClient(forged).get("/api/v1/runs"), 401)
    assert ApiToken.objects.get(pk=token.pk).last_used_at is None


def test_the_secret_is_not_stored(team):
    token, text = ApiToken.mint(user=member("alice", team), team=team, name="ci")
    secret = text.split("_", 2)[2]
    row = ApiToken.objects.filter(pk=token.pk).values()[0]
    assert secret not in str(row) and text.startswith(f"ao_{token.prefix}_")
    assert len(row["secret_hash"]) == 64


def test_a_revoked_token_is_401_at_once(team):
    token, text = ApiToken.mint(user=member("alice", team), team=team)
    api = ApiClient(text)
    assert api.get("/api/v1/runs").status_code == 200
    token.revoke()
    assert_problem(api.get("/api/v1/runs"), 401)


def test_an_inactive_users_token_is_401(team):
    user = member("alice", team)
    api = token_client(user, team)
    user.is_active = False
    user.save()
    assert_problem(api.get("/api/v1/runs"), 401)


def test_a_token_sees_only_its_teams_runs(team, other_team):
    user = member("alice", team)
    member("alice", other_team)
    mine, theirs = _start(team), _start(other_team)
    api = token_client(user, team)
    assert api.get(f"/api/v1/runs/{mine.pk}").status_code == 200
    # The user is in the other team too, but this token is not: 404, as if it did not exist.
    assert_problem(api.get(f"/api/v1/runs/{theirs.pk}"), 404)
    assert_problem(api.post(f"/api/v1/runs/{theirs.pk}/cancel"), 404)
    assert_problem(api.get(f"/api/v1/runs/{theirs.pk}/events"), 404)
    listed = [i["id"] for i in api.get("/api/v1/runs").json()["items"]]
    assert listed == [str(mine.pk)]
    r = api.post("/api/v1/runs", {"workflow": "t-steps", "team": "other"})
    assert_problem(r, 403)


def test_a_run_of_a_team_the_user_is_not_in_is_404(team, other_team):
    api = token_client(member("alice", team), team)
    theirs = _start(other_team)
    assert_problem(api.get(f"/api/v1/runs/{theirs.pk}"), 404)


def test_viewer_may_read_but_not_act(team):
    run = _start(team)
    api = token_client(member("vera", team, Role.VIEWER), team)
    assert api.get(f"/api/v1/runs/{run.pk}").status_code == 200
    for action, body in [
        ("cancel", None),
        ("pause", None),
        ("resume", None),
        ("retry", {"from_step": 1}),
        ("budget", {"usd": 3}),
        ("signals/go", {"payload": 1}),
    ]:
        problem = assert_problem(api.post(f"/api/v1/runs/{run.pk}/{action}", body), 403)
        assert "viewer" not in problem["detail"] or "role" in problem["detail"]
    assert_problem(api.post("/api/v1/runs", {"workflow": "t-steps"}), 403)
    assert Run.objects.count() == 1


def test_a_role_change_takes_effect_at_once(team):
    user = member("olga", team, Role.VIEWER)
    api = token_client(user, team)
    run = _start(team, "t-compensate")
    assert_problem(api.post(f"/api/v1/runs/{run.pk}/pause"), 403)
    set_role(user, team, Role.OPERATOR)
    assert api.post(f"/api/v1/runs/{run.pk}/pause").status_code == 202
    set_role(user, team, Role.VIEWER)
    assert_problem(api.post(f"/api/v1/runs/{run.pk}/resume"), 403)
    Membership.objects.filter(user=user, team=team).delete()
    assert_problem(api.get(f"/api/v1/runs/{run.pk}"), 404)


def test_last_use_is_recorded_at_most_once_a_minute(team, time_machine):
    time_machine.move_to(timezone.now())
    token, text = ApiToken.mint(user=member("alice", team), team=team)
    api = ApiClient(text)
    api.get("/api/v1/runs")
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    time_machine.shift(timedelta(seconds=30))
    api.get("/api/v1/runs")
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    time_machine.shift(timedelta(seconds=31))
    api.get("/api/v1/runs")
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


def test_rate_limit_is_429_with_retry_after(team, settings):
    settings.AGENTOPS_API_RATE_PER_MINUTE = 3
    user = member("alice", team)
    api, other = token_client(user, team), token_client(user, team)
    for _ in range(3):
        assert api.get("/api/v1/runs").status_code == 200
    r = api.get("/api/v1/runs")
    problem = assert_problem(r, 429)
    assert 1 <= int(r["Retry-After"]) <= 60 and problem["retry_after"] == int(r["Retry-After"])
    assert other.get("/api/v1/runs").status_code == 200  # per token


def test_session_auth_reads_and_needs_csrf_to_write(team):
    user = member("sam", team)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    api = ApiClient(client=browser)
    assert api.get("/api/v1/runs").status_code == 200
    problem = assert_problem(api.post("/api/v1/runs", {"workflow": "t-steps"}), 403)
    assert "CSRF" in problem["detail"]
    # With the CSRF cookie and header, as the console sends them.
    browser.get("/admin/login/")
    csrf = browser.cookies["csrftoken"].value
    r = api.post("/api/v1/runs", {"workflow": "t-steps"}, headers={"X-CSRFToken": csrf})
    assert r.status_code == 202, r.content
    assert Run.objects.get().created_by == user


def test_a_bad_token_is_not_rescued_by_a_session(team):
    browser = Client()
    browser.force_login(member("sam", team))
    r = ApiClient("ao_nope_nope", client=browser).get("/api/v1/runs")
    assert_problem(r, 401)


def test_a_session_user_in_several_teams_names_the_team(team, other_team):
    user = member("sam", team)
    member("sam", other_team)
    browser = Client()
    browser.force_login(user)
    api = ApiClient(client=browser)
    problem = assert_problem(api.post("/api/v1/runs", {"workflow": "t-steps"}), 422)
    assert "team" in problem["detail"]
    r = api.post("/api/v1/runs", {"workflow": "t-steps", "team": "other"})
    assert r.status_code == 202 and r.json()["team"] == "other"
    assert_problem(api.post("/api/v1/runs", {"workflow": "t-steps", "team": "ghosts"}), 422)


# ------------------------------------------------------------------ create_api_token
def test_create_api_token_prints_a_working_token_once(team):
    member("alice", team)
    out = StringIO()
    call_command("create_api_token", "alice", "--team", "default", "--name", "ci", stdout=out)
    text = out.getvalue().strip()
    assert text.startswith("ao_")
    token = ApiToken.objects.get()
    assert (token.name, token.team, token.user.username) == ("ci", team, "alice")
    assert text.split("_", 2)[2] not in token.secret_hash
    assert ApiClient(text).get("/api/v1/runs").status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost", "--team", "default"], "no user 'ghost'"),
        (["alice", "--team", "ghosts"], "unknown team 'ghosts'"),
        (["bob", "--team", "default"], "not a member"),
    ],
)
def test_create_api_token_refuses(team, django_user_model, args, message):
    member("alice", team)
    django_user_model.objects.create(username="bob")
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=StringIO())
    assert not ApiToken.objects.exists()
