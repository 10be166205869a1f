"""Sign-in, sign-out, login throttling, the content security policy and secure cookies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.test import Client

from runs.console import render_run_list
from runs.models import Membership, Team
from runs.run_page import render_run_live
from tests.runs.console_support import htmx_headers, make_cast, make_user, start

pytestmark = [pytest.mark.django_db]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-test-password"


@pytest.mark.engine
def test_pages_need_sign_in(client: Client) -> None:
    response = client.get("/runs/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/runs/"


@pytest.mark.engine
def test_an_htmx_request_signed_out_sends_the_page_to_sign_in(client: Client) -> None:
    response = client.get(
        "/runs/", headers={**htmx_headers("runs-table"), "HX-Current-URL": "http://t/runs/?q=x"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/login/?next=")


@pytest.mark.engine
def test_root_goes_to_the_runs_list(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/runs/"


@pytest.mark.engine
def test_sign_in_then_out(client: Client, team: Team) -> None:
    make_user("alice", team)
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'<label for="id_username">' in page.content
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/runs/"
    assert client.get("/runs/").status_code == 200
    assert client.get("/logout/").status_code == 405  # signing out is a POST
    response = client.post("/logout/")
    assert response["Location"] == "/login/"
    assert client.get("/runs/").status_code == 302


@pytest.mark.engine
def test_a_wrong_password_is_shown_and_repeated_failures_lock_out(
    client: Client, team: Team, settings
) -> None:
    make_user("alice", team)
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/login/", {"username": "alice", "password": "wrong"})
    # Locked out now, even with the right password.
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not locked.
    make_user("bob", team)
    other = client.post("/login/", {"username": "bob", "password": PASSWORD})
    assert other.status_code == 302


@pytest.mark.engine
def test_pages_carry_a_policy_without_inline_script(team: Team, other_team: Team) -> None:
    cast = make_cast(team, other_team)
    run = start("t-steps", {"n": 1}, team=team, user=cast.owner)
    client = cast.client("owner")
    pages = {
        "/runs/": 200,
        f"/runs/{run.pk}/": 200,
        f"/runs/{run.pk}/steps/": 200,
        f"/runs/{run.pk}/confirm-cancel/": 200,
        "/runs/new/?workflow=t-steps": 200,
        "/dashboard/": 200,
        "/approvals/": 200,
        "/notifications/": 200,
        "/notifications/preferences/": 200,
        "/tokens/": 200,
        f"/runs/{uuid.uuid4()}/": 404,
    }
    anonymous = Client().get("/login/")
    for response, expected in [(anonymous, 200), *((client.get(p), s) for p, s in pages.items())]:
        assert response.status_code == expected, response
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        html = response.content.decode()
        assert_no_inline_code(html)
        # Scripts and styles are our own static files, never another origin's (no CDN).
        assets = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*)"', html)
        if expected == 200:
            assert assets and all(a.startswith("/static/") for a in assets), assets
    # What the sockets push is swapped into those pages: it must obey the same policy.
    from approvals.inbox import render_inbox_list
    from notifications.bell import render_bell

    lead = make_user("ada", team, Membership.Role.ADMIN)  # has an inbox
    pushed = [
        render_run_live(cast.owner, run.pk),
        render_run_list(cast.owner, ""),
        render_bell(cast.owner),
        render_inbox_list(lead, ""),
    ]
    for html in pushed:
        assert html and 'hx-swap-oob="true"' in html, html
        assert_no_inline_code(html)


def assert_no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style"


def _settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTOPS_", "DATABASE"))}
    clean.update(DJANGO_SETTINGS_MODULE="agentops.settings", **env)
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(repr(s.AGENTOPS_BASE_URL), s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secure_cookies_follow_the_environment(tmp_path: Path) -> None:
    on = _settings_of(AGENTOPS_DATA_DIR=str(tmp_path), DJANGO_SECURE_COOKIES="true")
    assert on.returncode == 0, on.stderr
    assert on.stdout.split()[-2:] == ["True", "True"]
    off = _settings_of(AGENTOPS_DATA_DIR=str(tmp_path))
    assert off.stdout.split()[-2:] == ["False", "False"]
    # Served at an https:// address, they are secure unless said otherwise.
    https = "https://ops.example.com"
    served = _settings_of(AGENTOPS_DATA_DIR=str(tmp_path), AGENTOPS_BASE_URL=https)
    assert served.stdout.split()[-3:] == [repr(https), "True", "True"], served.stderr
    told = _settings_of(
        AGENTOPS_DATA_DIR=str(tmp_path), AGENTOPS_BASE_URL=https, DJANGO_SECURE_COOKIES="false"
    )
    assert told.stdout.split()[-2:] == ["False", "False"]
    bad = _settings_of(AGENTOPS_DATA_DIR=str(tmp_path), DJANGO_SECURE_COOKIES="perhaps")
    assert bad.returncode != 0
    assert "DJANGO_SECURE_COOKIES" in bad.stderr
