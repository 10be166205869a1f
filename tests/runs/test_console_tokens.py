"""API tokens in the console: a person lists, makes and revokes their own tokens; the full
token is shown once, in the answer to the POST that made it, and works against the API."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from runs.api_models import ApiToken
from runs.models import Event, Membership, Team
from tests.runs.api_support import ApiClient, assert_problem
from tests.runs.console_support import Cast, htmx_headers, make_cast, make_user

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

TOKEN_TEXT = re.compile(r"ao_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


def make(client: Client, team: Team, name: str = "nightly import", **headers: str) -> str:
    """POST the form; the one full token in the answer."""
    response = client.post("/tokens/", {"name": name, "team": team.pk}, headers=headers)
    assert response.status_code == 200, response.content[:2000]
    found = set(TOKEN_TEXT.findall(response.content.decode()))
    assert len(found) == 1, found
    assert "no-store" in response["Cache-Control"]
    return found.pop()


def test_the_page_needs_a_sign_in(client: Client) -> None:
    response = client.get("/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/tokens/", {"name": "x"}).status_code == 302
    assert ApiToken.objects.count() == 0


def test_make_a_token_see_it_once_and_use_it(cast: Cast) -> None:
    client = cast.client("viewer")  # every role may use the API (viewers read)
    page = client.get("/tokens/")
    assert page.status_code == 200
    assert "You have no API tokens yet." in page.content.decode()
    assert 'href="/tokens/" aria-current="page"' in page.content.decode()

    text = make(client, cast.team)
    token = ApiToken.objects.get()
    assert (token.user, token.team, token.name) == (cast.viewer, cast.team, "nightly import")
    assert text.startswith(f"ao_{token.prefix}_")
    assert text.split("_", 2)[2] not in token.secret_hash  # only the hash is kept

    # Never again: not on a later page load, not in the list, not in the session.
    later = client.get("/tokens/").content.decode()
    assert text not in later and TOKEN_TEXT.search(later) is None
    assert f"ao_{token.prefix}_…" in later and "nightly import" in later
    assert text not in str(dict(client.session))

    assert ApiClient(text).get("/api/v1/runs").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert token.last_used_at.strftime("%Y-%m-%d %H:%M") in client.get("/tokens/").content.decode()
    event = Event.objects.get(kind="token.created")
    assert (event.actor, event.team_id, event.chain) == (
        "user:watcher",
        cast.team.pk,
        "team:default",
    )
    assert event.data == {"prefix": token.prefix, "name": "nightly import", "user": "watcher"}


def test_make_with_htmx_swaps_the_form_and_reveals_the_token_out_of_band(cast: Cast) -> None:
    client = cast.client("owner")
    response = client.post(
        "/tokens/", {"name": "ci", "team": cast.team.pk}, headers=htmx_headers("token-form")
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="token-form">')
    assert '<div id="token-created" hx-swap-oob="true">' in html
    assert 'id="token-table" class="card" aria-labelledby="tokens-title" hx-swap-oob="true"' in html
    assert len(set(TOKEN_TEXT.findall(html))) == 1
    assert "<html" not in html
    assert "Copy it now" in html  # the toast, out of band too
    assert 'hx-history="false"' in html  # htmx keeps no copy of this page in its history


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "", "team": "TEAM"}, "This field is required."),
        ({"name": "x" * 101, "team": "TEAM"}, "at most 100 characters"),
        ({"name": "ci", "team": "OTHER"}, "Select a valid choice."),
        ({"name": "ci", "team": "999999"}, "Select a valid choice."),
        ({"name": "ci", "team": "nonsense"}, "Select a valid choice."),
    ],
)
def test_bad_input_is_422_with_the_error_at_the_field(cast: Cast, data, error) -> None:
    ids = {"TEAM": str(cast.team.pk), "OTHER": str(cast.other_team.pk)}
    data = {k: ids.get(v, v) for k, v in data.items()}
    client = cast.client("owner")
    for headers in ({}, htmx_headers("token-form")):
        response = client.post("/tokens/", data, headers=headers)
        assert response.status_code == 422
        assert error in response.content.decode()
        assert TOKEN_TEXT.search(response.content.decode()) is None
    assert ApiToken.objects.count() == 0


def test_a_person_in_no_team_cannot_make_one(team: Team) -> None:
    loner = make_user("loner")
    client = Client()
    client.force_login(loner)
    assert "not a member of any team" in client.get("/tokens/").content.decode()
    assert client.post("/tokens/", {"name": "x", "team": team.pk}).status_code == 422
    assert ApiToken.objects.count() == 0


def test_revoke_after_a_confirmation_then_the_token_is_refused(cast: Cast) -> None:
    client = cast.client("owner")
    text = make(client, cast.team)
    token = ApiToken.objects.get()
    assert f'href="/tokens/{token.pk}/confirm-revoke/"' in client.get("/tokens/").content.decode()

    # Without JS: a confirmation page whose form posts the revocation (with CSRF).
    confirm = client.get(f"/tokens/{token.pk}/confirm-revoke/")
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert f'action="/tokens/{token.pk}/revoke/"' in html and "csrfmiddlewaretoken" in html
    assert ApiToken.objects.get().revoked_at is None  # asking changes nothing
    # With htmx: the same box, inline.
    box = client.get(f"/tokens/{token.pk}/confirm-revoke/", headers=htmx_headers("revoke-confirm"))
    assert box.content.decode().lstrip().startswith('<div id="revoke-confirm">')

    response = client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert_problem(ApiClient(text).get("/api/v1/runs"), 401)
    page = client.get("/tokens/").content.decode()
    assert "revoked: it no longer works" in page
    assert f"/tokens/{token.pk}/confirm-revoke/" not in page  # no button for a revoked token
    event = Event.objects.get(kind="token.revoked")
    assert (event.actor, event.data["prefix"]) == ("user:owner", token.prefix)

    # Again: nothing changes, nothing more is recorded.
    first = token.revoked_at
    response = client.post(f"/tokens/{token.pk}/revoke/", headers=htmx_headers("token-table"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="token-table"')
    assert '<div id="revoke-confirm" hx-swap-oob="true">' in html
    assert "already revoked" in html
    token.refresh_from_db()
    assert token.revoked_at == first
    assert Event.objects.filter(kind="token.revoked").count() == 1


def test_someone_elses_token_is_404_and_untouched(cast: Cast) -> None:
    mine = make(cast.client("owner"), cast.team)
    token = ApiToken.objects.get()
    other = cast.client("operator")  # same team, another person
    assert other.get(f"/tokens/{token.pk}/confirm-revoke/").status_code == 404
    assert other.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert other.post("/tokens/999999/revoke/").status_code == 404
    assert f"ao_{token.prefix}_" not in other.get("/tokens/").content.decode()
    assert ApiToken.objects.get().revoked_at is None
    assert ApiClient(mine).get("/api/v1/runs").status_code == 200


def test_revoke_is_post_only_and_needs_csrf(cast: Cast) -> None:
    make(cast.client("owner"), cast.team)
    token = ApiToken.objects.get()
    assert cast.client("owner").get(f"/tokens/{token.pk}/revoke/").status_code == 405
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast.owner)
    assert browser.post(f"/tokens/{token.pk}/revoke/").status_code == 403
    assert browser.post("/tokens/", {"name": "x", "team": cast.team.pk}).status_code == 403
    assert ApiToken.objects.get().revoked_at is None and ApiToken.objects.count() == 1


def test_tokens_of_a_team_left_stay_listed_and_revocable(cast: Cast) -> None:
    client = cast.client("owner")
    make(client, cast.team, name="old")
    Membership.objects.filter(user=cast.owner).delete()
    token = ApiToken.objects.get()
    assert "old" in client.get("/tokens/").content.decode()
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert ApiToken.objects.get().revoked_at is not None


def test_names_are_escaped_and_the_page_has_no_inline_script(cast: Cast) -> None:
    client = cast.client("owner")
    make(client, cast.team, name='<script>alert("x")</script>')
    html = client.get("/tokens/").content.decode()
    assert '<script>alert("x")' not in html and "&lt;script&gt;" in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert re.search(r"\son[a-z]+=", html) is None
    policy = client.get("/tokens/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_tokens_are_listed_newest_first_with_their_state(cast: Cast) -> None:
    client = cast.client("owner")
    make(client, cast.team, name="first")
    make(client, cast.team, name="second")
    ApiToken.objects.filter(name="first").update(revoked_at=timezone.now())
    html = client.get("/tokens/").content.decode()
    assert html.index("<td>second</td>") < html.index("<td>first</td>")
    assert html.count(">active<") == 1
