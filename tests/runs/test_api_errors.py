"""Every error is an RFC 9457 problem with the right status, and no bad input is a 500;
callback URLs that would point the server at its own network are refused."""

from __future__ import annotations

import socket
import uuid

import pytest

from runs.api.callbacks import validate_callback_url
from runs.api.problems import CallbackUrlInvalid
from runs.api_models import RunCallback
from runs.models import Run
from tests.runs.api_support import assert_problem, member, token_client

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


@pytest.fixture
def api(team):
    return token_client(member("alice", team), team)


@pytest.fixture
def run(team):
    return Run.start("t-steps", {"n": 1}, team=team, actor="t")[0]


START = "/api/v1/runs"


@pytest.mark.parametrize(
    ("raw", "status", "kind"),
    [
        ("{not json", 400, "malformed-body"),
        (b"\xff\xfe\x00garbage", 400, "malformed-body"),
        ("[1, 2]", 422, "validation-error"),
        ('"t-steps"', 422, "validation-error"),
        ("null", 422, "validation-error"),
        ("{}", 422, "validation-error"),
        ('{"workflow": 7}', 422, "validation-error"),
        ('{"workflow": ""}', 422, "validation-error"),
        ('{"workflow": "nope"}', 422, "unknown-workflow"),
        ('{"workflow": "t-steps", "input": {"n": "many"}}', 422, "input-invalid"),
        ('{"workflow": "t-steps", "input": [1]}', 422, "input-invalid"),
        ('{"workflow": "t-steps", "budget": {"usd": -1}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"usd": "lots"}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"beer": 1}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": [1]}', 422, "validation-error"),
        ('{"workflow": "t-steps", "budget": {"tokens": 1e30}}', 422, "invalid-value"),
        (
            '{"workflow": "t-steps", "budget": {"tokens": 10000000000000000000000}}',
            422,
            "invalid-value",
        ),
        ('{"workflow": "t-steps", "budget": {"usd": 1e20}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"usd": "1e400"}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"usd": "NaN"}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"actions": 4294967296}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "budget": {"wall_seconds": 4294967296}}', 422, "invalid-value"),
        ('{"workflow": "t-steps", "deadline": -5}', 422, "validation-error"),
        ('{"workflow": "t-steps", "deadline": 1e300}', 422, "validation-error"),
        # Python's json reads these; no JSON column stores them (RFC 8259 has none of them).
        ('{"workflow": "t-steps", "deadline": NaN}', 400, "malformed-body"),
        ('{"workflow": "t-wait", "input": {"timeout": NaN}}', 400, "malformed-body"),
        ('{"workflow": "t-wait", "input": {"timeout": -Infinity}}', 400, "malformed-body"),
        ('{"workflow": "t-wait", "input": {"timeout": 1e999}}', 400, "malformed-body"),
        ('{"workflow": "t-steps", "input": {"n": 1, "note": "a\\u0000b"}}', 400, "malformed-body"),
        ('{"workflow": "t-steps", "input": {"n": 1, "\\u0000": 1}}', 400, "malformed-body"),
        ('{"workflow": "t-steps", "input": {"n": 1, "note": "\\ud800"}}', 400, "malformed-body"),
        ('{"workflow": "t-steps", "team": "a\\u0000"}', 400, "malformed-body"),
        ('{"workflow": "t-steps", "deadline": "soon"}', 422, "validation-error"),
        ('{"workflow": "t-steps", "colour": "red"}', 422, "validation-error"),
        ('{"workflow": "t-steps", "team": 5}', 422, "validation-error"),
        ('{"workflow": "t-steps", "callback_url": "ftp://x"}', 422, "callback-url-refused"),
        ('{"workflow": "t-steps", "callback_url": 12}', 422, "validation-error"),
    ],
)
def test_bad_submissions_are_problems_not_500s(api, raw, status, kind):
    problem = assert_problem(api.post(START, raw=raw), status)
    assert problem["type"] == f"urn:agentops:problem:{kind}"
    assert problem["instance"] == START
    assert not Run.objects.exists()


def test_input_errors_name_each_field(api):
    r = api.post(START, {"workflow": "t-steps", "input": {"n": "many", "work_ms": -1}})
    problem = assert_problem(r, 422)
    locs = sorted(tuple(e["loc"]) for e in problem["errors"])
    assert locs == [("input", "n"), ("input", "work_ms")]
    assert "n:" in problem["detail"]


def test_request_validation_names_the_field(api):
    problem = assert_problem(api.post(START, {"workflow": "t-steps", "deadline": "x"}), 422)
    assert any(e["loc"][-1] == "deadline" for e in problem["errors"])
    assert "deadline" in problem["detail"]


def test_bad_idempotency_key_is_400(api):
    for key in ["x" * 201, "   ", "tab\there"]:
        r = api.post(START, {"workflow": "t-steps"}, headers={"Idempotency-Key": key})
        assert_problem(r, 400)
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/runs/not-a-uuid"),
        ("get", "/api/v1/runs/123"),
        ("get", f"/api/v1/runs/{uuid.uuid4()}"),
        ("post", f"/api/v1/runs/{uuid.uuid4()}/cancel"),
        ("post", "/api/v1/runs/%20/pause"),
        ("get", "/api/v1/runs/zzz/events"),
        ("get", "/api/v1/runs/zzz/stream"),
        ("get", "/api/v1/no/such/endpoint"),
        ("get", "/api/v1/runs/1/2/3/4"),
    ],
)
def test_unknown_things_are_404_problems(api, method, path):
    assert_problem(getattr(api, method)(path), 404)


@pytest.mark.parametrize(
    "query",
    [
        {"status": "sleepy"},
        {"limit": 0},
        {"limit": 10_000},
        {"limit": "ten"},
        {"created_after": "yesterday"},
        {"created_before": "2026-13-45"},
        {"created_after": "0001-01-01T00:00:00+01:00"},  # no UTC year for it
        {"created_before": "9999-12-31T23:59:59-01:00"},
    ],
)
def test_bad_list_filters_are_422(api, query):
    assert_problem(api.get(START, **query), 422)


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WyIyMDI2IiwieCJd", "!!!"])
def test_a_cursor_we_did_not_give_is_400(api, cursor):
    assert_problem(api.get(START, cursor=cursor), 400)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("retry", {"from_step": 0}, 422),
        ("retry", {"from_step": "one"}, 422),
        ("retry", {}, 422),
        ("retry", None, 422),
        ("budget", {}, 422),
        ("budget", {"usd": -3}, 422),
        ("budget", {"tokens": 2**64}, 422),
        ("budget", {"usd": 1e20}, 422),
        ("signals/" + "x" * 201, {"payload": 1}, 422),
        ("cancel", {"reason": 5}, 422),
        ("signals/go", {"payload": 1, "extra": 2}, 422),
    ],
)
def test_bad_action_bodies(api, run, path, body, status):
    assert_problem(api.post(f"/api/v1/runs/{run.pk}/{path}", body), status)


def test_storable_text_and_numbers_only_in_action_bodies(api, run):
    for path, raw in [
        ("signals/go", '{"payload": NaN}'),
        ("signals/go", '{"payload": {"a": "\\u0000"}}'),
        ("cancel", '{"reason": "stop\\u0000"}'),
        ("budget", '{"usd": Infinity}'),
    ]:
        problem = assert_problem(api.post(f"/api/v1/runs/{run.pk}/{path}", raw=raw), 400)
        assert "cannot be stored as JSON" in problem["detail"], problem
    assert not run.signals.exists() and Run.objects.get(pk=run.pk).status == run.status


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/runs?workflow=a%00b"),
        ("get", "/api/v1/runs?cursor=%00"),
        ("get", "/api/v1/events?x%00=1"),
        ("post", "/api/v1/runs/RUN/signals/go%00"),
        ("get", "/api/v1/runs/RUN%00/events"),
    ],
)
def test_a_nul_character_in_the_url_is_400(api, run, method, path):
    # PostgreSQL text cannot hold NUL: even a lookup with one would fail in the database.
    problem = assert_problem(getattr(api, method)(path.replace("RUN", str(run.pk))), 400)
    assert "NUL" in problem["detail"]


def test_bad_event_paging_is_422(api, run):
    for query in [{"after": -1}, {"after": "x"}, {"limit": 0}, {"after": 2**70}]:
        assert_problem(api.get(f"/api/v1/runs/{run.pk}/events", **query), 422)
        assert_problem(api.get("/api/v1/events", **query), 422)


def test_bad_last_event_id_is_400(api, run):
    r = api.get(f"/api/v1/runs/{run.pk}/stream", headers={"Last-Event-ID": "yesterday"})
    assert_problem(r, 400)


def test_wrong_method_is_not_a_500(api, run):
    r = api.client.delete(f"/api/v1/runs/{run.pk}", headers=api._headers(None))
    problem = assert_problem(r, 405)
    assert "GET" in r["Allow"] and "DELETE" in problem["detail"]


def test_openapi_and_docs_are_served(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in [
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/signals/{name}",
        "/api/v1/runs/{run_id}/events",
        "/api/v1/runs/{run_id}/stream",
        "/api/v1/events",
        "/api/v1/workflows",
    ]:
        assert p in paths, p
    assert client.get("/api/v1/docs").status_code == 200


# ------------------------------------------------------------------ callback URLs
def _resolves_to(monkeypatch, *addresses: str) -> None:
    """The DNS answer (the network edge) for any host."""

    def fake(host, port, *args, **kwargs):
        family = socket.AF_INET6 if ":" in addresses[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/x",
    ],
)
def test_link_local_and_metadata_callbacks_are_always_refused(url, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    with pytest.raises(CallbackUrlInvalid):
        validate_callback_url(url)


def test_a_name_resolving_to_link_local_is_refused(monkeypatch):
    _resolves_to(monkeypatch, "93.184.216.34", "169.254.169.254")
    with pytest.raises(CallbackUrlInvalid, match="169.254.169.254"):
        validate_callback_url("https://innocent.example/hook", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/",
    ],
)
def test_loopback_and_private_callbacks_need_the_setting(url, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = False
    with pytest.raises(CallbackUrlInvalid, match="AGENTOPS_ALLOW_PRIVATE_CALLBACKS"):
        validate_callback_url(url)
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    assert validate_callback_url(url) == url


def test_public_callbacks_are_accepted(monkeypatch):
    _resolves_to(monkeypatch, "93.184.216.34")
    assert validate_callback_url("https://hooks.example/x?y=1") == "https://hooks.example/x?y=1"
    _resolves_to(monkeypatch, "10.0.0.8")
    with pytest.raises(CallbackUrlInvalid, match="private"):
        validate_callback_url("https://hooks.example/x", allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["", "hooks.example/x", "javascript:alert(1)", "http://", "http://user:pw@hooks.example/"],
)
def test_malformed_callbacks_are_refused(url):
    with pytest.raises(CallbackUrlInvalid):
        validate_callback_url(url, allow_private=True)


def test_unresolvable_callback_host_is_refused(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(CallbackUrlInvalid, match="cannot resolve"):
        validate_callback_url("https://nowhere.invalid/x")


def test_refused_callback_over_the_api_is_422_and_starts_nothing(api, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = False
    for url in ["http://169.254.169.254/", "http://127.0.0.1:9/cb"]:
        r = api.post(START, {"workflow": "t-steps", "callback_url": url})
        problem = assert_problem(r, 422)
        assert problem["type"].endswith("callback-url-refused")
    assert not Run.objects.exists() and not RunCallback.objects.exists()
