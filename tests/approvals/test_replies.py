"""Deciding by replying to an approval email: real MIME messages as mail clients send them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from approvals.emails import send_request_emails
from approvals.models import ApprovalRequest, Decision
from approvals.replies import handle_reply
from approvals.reply_text import parse_reply
from runs.models import Event, Run, RunStatus
from tests.approvals.email_support import (
    GMAIL_QUOTE,
    OUTLOOK_QUOTE,
    address_for,
    reply,
    with_addresses,
)
from tests.approvals.support import start_gated
from tests.processes import database_url

pytestmark = [pytest.mark.engine, pytest.mark.django_db]
Status = ApprovalRequest.Status
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def people(team, other_team):
    return with_addresses(team, other_team)


@pytest.fixture
def gated(people):
    _run, request = start_gated(people.owner)
    return request


def replies_log(request: ApprovalRequest) -> list[Event]:
    return list(
        Event.objects.filter(run_id=request.run_id, kind="approval.email_reply").order_by("id")
    )


def answers_to(address: str) -> list[mail.EmailMessage]:
    return [m for m in mail.outbox if m.to == [address]]


# ------------------------------------------------------------------ deciding
def test_approve_from_a_gmail_reply_decides_with_the_comment_only(people, gated):
    body = f"Approve.\nLooks right to me.\n\nShip it on Monday.\n\n{GMAIL_QUOTE}"
    body += "-- \nAlice Example\nHead of Things\n"
    result = handle_reply(reply(address_for(gated, people.alice), body))
    assert (result.outcome, result.command, result.status) == ("decided", "approve", "approved")
    [decision] = Decision.objects.filter(request=gated)
    assert decision.reviewer == people.alice and decision.channel == "email"
    assert decision.comment == "Looks right to me.\n\nShip it on Monday."
    assert decision.actor == "email:alice"
    assert Run.objects.get(pk=gated.run_id).status == RunStatus.RUNNING  # woken
    [logged] = replies_log(gated)
    assert logged.actor == "email:alice@example.com" and logged.actor_user_id == people.alice.pk
    assert logged.data["outcome"] == "decided" and logged.data["command"] == "approve"
    assert not mail.outbox  # a decision is not answered


def test_reject_from_an_outlook_html_reply(people, gated):
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<div>REJECT</div><div>Wrong audience &amp; too early.</div>"
        "<div>Sent from my iPhone</div>"
        '<div id="divRplyFwdMsg"><hr><b>From:</b> agentops &lt;agentops@localhost&gt;<br>'
        "<b>Sent:</b> Tuesday, November 24, 2026 10:02 AM<br><b>To:</b> Alice<br>"
        "<b>Subject:</b> Approval needed</div><div>APPROVE approve</div></body></html>"
    )
    result = handle_reply(reply(address_for(gated, people.alice), None, html=html))
    assert result.outcome == "decided" and result.status == Status.REJECTED
    assert Decision.objects.get(request=gated).comment == "Wrong audience & too early."


def test_plain_part_is_preferred_and_outlook_quotes_are_dropped(people, gated):
    message = reply(
        address_for(gated, people.bob),
        f"reject!\nNot this week.\n\n{OUTLOOK_QUOTE}",
        sender="BOB@Example.com",  # addresses compare case-insensitively
        html="<p>APPROVE</p>",
    )
    result = handle_reply(message)
    assert result.outcome == "decided" and result.status == Status.REJECTED
    assert Decision.objects.get(request=gated).comment == "Not this week."


def test_original_message_marker_and_sent_from_lines_end_the_comment():
    parsed = parse_reply(
        "\n\n  *Approve*  -  fine by me\nsecond line\nSent from my Pixel\n"
        "-----Original Message-----\nFrom: agentops\nREJECT\n"
    )
    assert (parsed.command, parsed.comment) == ("approve", "fine by me\nsecond line")
    parsed = parse_reply("PAUSE\n> quoted\nwait for legal\n> more quoted\n")
    assert (parsed.command, parsed.comment) == ("pause", "wait for legal")
    assert parse_reply("Approved, thanks").command == ""  # not the word: not a command
    assert parse_reply("> APPROVE\n").command == ""  # a quoted command is not the reply's


def test_the_same_email_delivered_twice_decides_once(people, team):
    _run, request = start_gated(people.owner, {"quorum": 2})
    message = reply(address_for(request, people.alice), "APPROVE\nok")
    first, second = handle_reply(message), handle_reply(message)
    assert (first.outcome, second.outcome) == ("decided", "duplicate")
    assert Decision.objects.filter(request=request).count() == 1
    request.refresh_from_db()
    assert request.status == Status.PENDING and request.approvals_so_far() == 1
    # A second, different email of the same person is a second try (refused: counted once).
    third = handle_reply(reply(address_for(request, people.alice), "APPROVE"))
    assert third.reason == "not_allowed" and "already" in third.detail
    # Once decided, a redelivery of the deciding email is still a duplicate, not answered.
    deciding = reply(address_for(request, people.bob), "approve", sender="bob@example.com")
    assert handle_reply(deciding).status == Status.APPROVED
    mail.outbox.clear()
    again = handle_reply(deciding)
    assert again.outcome == "duplicate" and not again.replied and not mail.outbox
    assert [e.data["outcome"] for e in replies_log(request)] == [
        "decided",
        "duplicate",
        "refused",
        "decided",
        "duplicate",
    ]


def test_a_reply_after_the_request_was_decided_is_refused_with_its_outcome(people, gated):
    gated.decide(people.carol, "reject", comment="no")
    result = handle_reply(reply(address_for(gated, people.alice), "APPROVE"))
    assert (result.outcome, result.reason, result.status) == ("refused", "not_pending", "rejected")
    [answer] = answers_to("alice@example.com")
    assert "no longer pending: it was rejected" in answer.body and "carol (reject)" in answer.body
    assert answer.subject == "Re: Approval needed: publish"
    assert answer.extra_headers["Auto-Submitted"] == "auto-replied"
    assert f"/approvals/?request={gated.pk}" in answer.body
    assert Decision.objects.filter(request=gated).count() == 1


# ------------------------------------------------------------------ pausing
def test_pause_pauses_the_run(people, gated):
    result = handle_reply(reply(address_for(gated, people.alice), "PAUSE\nwaiting for legal"))
    assert result.outcome == "paused"
    run = Run.objects.get(pk=gated.run_id)
    assert run.status == RunStatus.PAUSED and run.pause_reason == "waiting for legal"
    paused = Event.objects.get(run=run, kind="run.paused")
    assert paused.actor == "email:alice" and paused.actor_user_id == people.alice.pk
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.PENDING


def test_pause_by_someone_who_may_neither_decide_nor_operate_is_refused(people, gated):
    result = handle_reply(
        reply(address_for(gated, people.viewer), "pause", sender="viewer@example.com")
    )
    assert (result.outcome, result.reason) == ("refused", "not_allowed")
    assert Run.objects.get(pk=gated.run_id).status == RunStatus.WAITING
    [answer] = answers_to("viewer@example.com")
    assert "You may not pause this run" in answer.body


# ------------------------------------------------------------------ refusals
def test_a_forged_sender_cannot_use_someone_elses_reply_address(people, gated):
    result = handle_reply(
        reply(address_for(gated, people.alice), "APPROVE", sender="mallory@evil.example")
    )
    assert (result.outcome, result.reason) == ("refused", "forged_sender")
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.PENDING
    assert not Decision.objects.filter(request=gated).exists()
    # A stranger gets no answer (the From may be an innocent, forged address) ...
    assert answers_to("mallory@evil.example") == []
    [logged] = replies_log(gated)
    assert logged.actor == "email:mallory@evil.example" and logged.actor_user_id is None
    # Another reviewer with their own address may not use Alice's either.
    bob = handle_reply(reply(address_for(gated, people.alice), "APPROVE", sender="bob@example.com"))
    assert bob.reason == "forged_sender"
    # ... a person we know is told why.
    [answer] = answers_to("bob@example.com")
    assert "given to someone else" in answer.body


def test_bad_signature_is_refused_and_not_logged_on_the_run(people, gated):
    address = address_for(gated, people.alice)
    local, domain = address.split("@")
    forged = local[:-4] + "aaaa@" + domain
    result = handle_reply(reply(forged, "APPROVE"))
    assert (result.outcome, result.reason, result.request_id) == ("refused", "bad_signature", None)
    assert not replies_log(gated)
    [answer] = answers_to("alice@example.com")
    assert "not sent to a valid reply address" in answer.body
    result = handle_reply(reply("ops@localhost", "APPROVE", sender="bob@example.com"))
    assert result.reason == "bad_signature" and answers_to("bob@example.com")


def test_an_expired_reply_address_is_refused(people, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner, {"deadline": 3600})
    message = reply(address_for(request, people.alice), "APPROVE")
    time_machine.shift(timedelta(minutes=61))  # the deadline sweep has not run yet
    result = handle_reply(message)
    assert (result.outcome, result.reason) == ("refused", "expired")
    assert ApprovalRequest.objects.get(pk=request.pk).status == Status.PENDING
    [answer] = answers_to("alice@example.com")
    assert "expired" in answer.body and f"/approvals/?request={request.pk}" in answer.body
    assert replies_log(request)[0].data["reason"] == "expired"


def test_an_unknown_command_is_answered_with_the_commands(people, gated):
    result = handle_reply(reply(address_for(gated, people.alice), "Looks good to me!\n"))
    assert (result.outcome, result.reason) == ("refused", "unknown_command")
    [answer] = answers_to("alice@example.com")
    assert "“Looks good to me!”" in answer.body
    assert "APPROVE" in answer.body and "REJECT" in answer.body and "PAUSE" in answer.body
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.PENDING


def test_someone_who_may_not_decide_is_refused(people, gated):
    result = handle_reply(
        reply(address_for(gated, people.outsider), "APPROVE", sender="outsider@example.com")
    )
    assert (result.outcome, result.reason) == ("refused", "not_allowed")
    assert "may not decide approvals in this team" in answers_to("outsider@example.com")[0].body
    owner = handle_reply(
        reply(address_for(gated, people.owner), "APPROVE", sender="owner@example.com")
    )
    assert owner.reason == "not_allowed"


def test_lower_and_upper_cased_reply_addresses_still_decide(people, team):
    _run, first = start_gated(people.owner)
    _run, second = start_gated(people.owner)
    assert handle_reply(reply(address_for(first, people.alice).lower(), "APPROVE")).ok
    upper = reply(address_for(second, people.bob).upper(), "REJECT", sender="bob@example.com")
    assert handle_reply(upper).ok
    assert ApprovalRequest.objects.get(pk=first.pk).status == Status.APPROVED
    assert ApprovalRequest.objects.get(pk=second.pk).status == Status.REJECTED


def test_the_token_is_found_in_cc_and_delivered_to(people, gated):
    message = reply(
        "Team <team@example.com>",
        "APPROVE",
        headers={"Cc": f"Approvals <{address_for(gated, people.alice)}>"},
    )
    assert handle_reply(message).outcome == "decided"
    _run, other = start_gated(people.owner)
    message = reply(
        "team@example.com", "REJECT", headers={"Delivered-To": address_for(other, people.alice)}
    )
    assert handle_reply(message).status == Status.REJECTED


@pytest.mark.parametrize(
    ("sender", "headers"),
    [
        ("alice@example.com", {"Auto-Submitted": "auto-replied"}),
        ("alice@example.com", {"Precedence": "bulk"}),
        ("alice@example.com", {"X-Auto-Response-Suppress": "All"}),
        ("MAILER-DAEMON@mx.example.com", {}),
    ],
)
def test_automatic_messages_never_decide_and_are_never_answered(people, gated, sender, headers):
    body = "APPROVE\nI am out of the office until Monday."
    result = handle_reply(
        reply(address_for(gated, people.alice), body, sender=sender, headers=headers)
    )
    assert result.outcome == "refused" and not result.replied
    assert not mail.outbox
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.PENDING
    assert replies_log(gated)[0].data["outcome"] == "refused"


# ------------------------------------------------------------------ from the request email
def test_replying_to_the_request_email_itself_decides(people, gated):
    send_request_emails(gated.pk, "requested")
    [request_email] = [m for m in mail.outbox if m.to == ["lead@example.com"]]
    answer = reply(request_email.reply_to[0], "approve", sender="lead@example.com")
    assert handle_reply(answer).status == Status.APPROVED
    assert Decision.objects.get(request=gated).reviewer == people.lead


# ------------------------------------------------------------------ transports
@override_settings(ANYMAIL={"WEBHOOK_SECRET": "esp:webhook-secret"})
def test_an_esp_inbound_webhook_through_anymail_decides(people, gated, client):
    raw = reply(address_for(gated, people.alice), "APPROVE\nvia the ESP").as_string()
    body = json.dumps({"RawEmail": raw, "Headers": [], "FromFull": {"Email": "x@example.com"}})
    unauthorised = client.post("/anymail/postmark/inbound/", body, content_type="application/json")
    assert unauthorised.status_code == 400
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.PENDING
    auth = "Basic " + base64.b64encode(b"esp:webhook-secret").decode()
    response = client.post(
        "/anymail/postmark/inbound/", body, content_type="application/json", HTTP_AUTHORIZATION=auth
    )
    assert response.status_code == 200
    assert ApprovalRequest.objects.get(pk=gated.pk).status == Status.APPROVED
    assert Decision.objects.get(request=gated).comment == "via the ESP"


@pytest.mark.django_db(transaction=True)
def test_receive_reply_reads_stdin_and_decides(team, other_team, tmp_path):
    people = with_addresses(team, other_team)
    _run, request = start_gated(people.owner)
    raw = reply(address_for(request, people.alice), "Reject\nnot now").as_bytes()
    sqlite = connection.vendor == "sqlite"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTOPS_TEST")},
        # The process uses this test's database (committed: a transactional test).
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "AGENTOPS_APPS": "tests.testapp",
        "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}"
        if sqlite
        else database_url(),
        "CELERY_BROKER_URL": "memory://",
        "CHANNEL_LAYER_URL": "memory://",
        "AGENTOPS_DATA_DIR": str(tmp_path),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "receive_reply"],
        input=raw,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    printed = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert printed["outcome"] == "decided" and printed["status"] == "rejected"
    assert ApprovalRequest.objects.get(pk=request.pk).status == Status.REJECTED
    assert Decision.objects.get(request=request).comment == "not now"
    # The same message from a file: a duplicate, nothing changes.
    path = tmp_path / "reply.eml"
    path.write_bytes(raw)
    again = subprocess.run(
        [sys.executable, "manage.py", "receive_reply", str(path)],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert json.loads(again.stdout.decode().strip().splitlines()[-1])["outcome"] == "duplicate"
