"""Request, reminder and escalation emails, and their signed reply addresses."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail, signing
from django.test import override_settings
from django.utils import timezone
from django.utils.http import int_to_base36

from approvals import sweeps
from approvals.emails import send_request_emails
from approvals.models import ApprovalEmail, ApprovalRequest
from approvals.replyto import (
    BadToken,
    ExpiredToken,
    find_tokens,
    make_token,
    read_token,
    reply_address,
)
from runs.models import Event
from tests.approvals.email_support import free_port, smtp_server, with_addresses
from tests.approvals.support import start_gated

pytestmark = [pytest.mark.engine, pytest.mark.django_db]
DECIDERS = ["alice@example.com", "bob@example.com", "carol@example.com", "lead@example.com"]
REPLY_TO = re.compile(r"^reply\+([0-9a-z-]+)@localhost$")


@pytest.fixture
def people(team, other_team):
    return with_addresses(team, other_team)


def by_recipient() -> dict[str, mail.EmailMultiAlternatives]:
    return {m.to[0]: m for m in mail.outbox}


def html_of(message: mail.EmailMultiAlternatives) -> str:
    [(html, kind)] = message.alternatives
    assert kind == "text/html"
    return html


# ------------------------------------------------------------------ request emails
def test_each_approver_gets_one_email_with_a_personal_signed_reply_address(people):
    _run, request = start_gated(people.owner)
    assert send_request_emails(request.pk, "requested") == 4
    sent = by_recipient()
    # Deciders only: not the owner (an operator who started it), the viewer, another team.
    assert sorted(sent) == DECIDERS
    for address, message in sent.items():
        [reply_to] = message.reply_to
        token = read_token(REPLY_TO.match(reply_to).group(1))
        user = {u.email: u for u in (people.alice, people.bob, people.carol, people.lead)}[address]
        assert (token.request_id, token.user_id) == (request.pk, user.pk)
        assert message.extra_headers["Auto-Submitted"] == "auto-generated"
        assert message.subject.startswith("Approval needed: publish (t-approve ")
    # A retried task, or the doorbell rung twice, sends nothing again.
    assert send_request_emails(request.pk, "requested") == 0
    assert len(mail.outbox) == 4
    request.refresh_from_db()
    assert request.emailed_at is not None
    rows = ApprovalEmail.objects.filter(request=request)
    assert rows.count() == 4 and all(r.sent_at and r.attempts == 1 for r in rows)
    assert {r.message_id for r in rows} == {m.extra_headers["Message-ID"] for m in mail.outbox}
    event = Event.objects.get(run_id=request.run_id, kind="approval.emailed")
    assert sorted(event.data["to"]) == ["alice", "bob", "carol", "lead"]


@override_settings(AGENTOPS_BASE_URL="https://ops.example.com/")
def test_the_email_says_what_is_proposed_what_was_done_and_how_to_decide(people, team):
    hostile = '<script>alert("x")</script> & <b>friends</b>'
    _run, request = start_gated(
        people.owner, {"to": ["list@example.com"], "topic": hostile}, workflow="draft-email"
    )
    send_request_emails(request.pk, "requested")
    message = by_recipient()["alice@example.com"]
    text, html = message.body, html_of(message)
    inbox = f"https://ops.example.com/approvals/?request={request.pk}"
    run = f"https://ops.example.com/runs/{request.run_id}/"
    for part in (text, html):
        assert inbox in part and run in part
        assert "APPROVE" in part and "REJECT" in part and "PAUSE" in part
        assert request.deadline_at.strftime("%Y-%m-%d %H:%M") + " UTC" in part
        assert "draft" in part  # the step it completed before asking
        assert "subject" in part  # what the reviewer may edit
    # The payload is the agent's: verbatim in the text part, escaped in the HTML part.
    assert hostile in text
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;friends&lt;/b&gt;" in html
    assert "\n" not in message.subject and hostile not in message.subject


def test_a_failed_send_is_retried_and_the_sweep_sends_what_the_lost_doorbell_did_not(
    people, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner)
    closed = free_port()  # nothing listens there: the SMTP connection is refused
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=closed,
        EMAIL_TIMEOUT=5,
    ):
        assert send_request_emails(request.pk, "requested") == 0
    rows = ApprovalEmail.objects.filter(request=request)
    assert rows.count() == 4 and all(r.error and not r.sent_at for r in rows)
    request.refresh_from_db()
    assert request.emailed_at is None  # the sweep will try again
    # Within a minute of the attempt nothing is tried again (the rows are claimed)...
    assert sweeps.sweep()["emailed"] == 0 and send_request_emails(request.pk, "requested") == 0
    # ...then the sweep sends them, once.
    time_machine.shift(timedelta(seconds=61))
    assert sweeps.sweep()["emailed"] == 4
    assert sweeps.sweep()["emailed"] == 0
    assert len(mail.outbox) == 4
    request.refresh_from_db()
    assert request.emailed_at is not None
    assert all(r.sent_at and r.attempts == 2 and not r.error for r in rows.all())


def test_the_unsent_sweep_waits_a_minute_and_reads_only_pending_unsent_requests(
    people, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner)  # its doorbell never rang (no worker here)
    _run2, decided = start_gated(people.owner)
    decided.decide(people.alice, "approve")
    time_machine.shift(timedelta(seconds=30))
    assert sweeps.sweep()["emailed"] == 0
    time_machine.shift(timedelta(seconds=31))
    assert list(sweeps.QUERIES["unsent"](timezone.now())) == [request]
    assert sweeps.sweep()["emailed"] == 4
    assert {m.to[0] for m in mail.outbox} == set(DECIDERS)
    assert not ApprovalEmail.objects.filter(request=decided).exists()


def test_give_up_after_max_attempts_so_the_sweep_stops(people, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner)
    settings = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": free_port(),
        "EMAIL_TIMEOUT": 5,
    }
    with override_settings(**settings):
        for _ in range(5):
            send_request_emails(request.pk, "requested")
            time_machine.shift(timedelta(seconds=61))
        assert send_request_emails(request.pk, "requested") == 0
    request.refresh_from_db()
    assert request.emailed_at is not None  # given up: out of the sweep's index
    assert all(r.given_up and r.error for r in ApprovalEmail.objects.filter(request=request))


def test_reminder_skips_who_decided_and_escalation_goes_to_the_newly_eligible(people):
    _run, request = start_gated(people.owner, {"quorum": 2})
    request.decide(people.alice, "approve")
    assert send_request_emails(request.pk, "reminder") == 3
    assert sorted(by_recipient()) == ["bob@example.com", "carol@example.com", "lead@example.com"]
    assert all(m.subject.startswith("Reminder: ") for m in mail.outbox)
    assert send_request_emails(request.pk, "reminder") == 0

    mail.outbox.clear()
    _run, request = start_gated(
        people.owner, {"approvers": ["role:admin"], "escalate_to": ["group:leads"]}
    )
    send_request_emails(request.pk, "requested")
    assert [m.to for m in mail.outbox] == [["carol@example.com"]]
    assert request.escalate() is True
    assert send_request_emails(request.pk, "escalated") == 1
    assert mail.outbox[-1].to == ["lead@example.com"]
    assert mail.outbox[-1].subject.startswith("Escalated: ")


def test_nothing_is_sent_for_a_decided_request_and_people_without_address_are_skipped(people):
    people.bob.email = ""
    people.bob.save()
    _run, request = start_gated(people.owner)
    request.decide(people.carol, "reject")
    assert send_request_emails(request.pk, "requested") == 0
    _run, request = start_gated(people.owner)
    assert send_request_emails(request.pk, "requested") == 3
    assert "bob@example.com" not in by_recipient()


def test_the_doorbell_names_the_reason(people, django_capture_on_commit_callbacks, monkeypatch):
    from approvals import tasks

    rung: list[tuple[int, str]] = []
    # The broker is the network edge here: record what would have been sent.
    monkeypatch.setattr(tasks.send_request_emails, "delay", lambda pk, why: rung.append((pk, why)))
    with django_capture_on_commit_callbacks(execute=True):
        _run, request = start_gated(people.owner, {"deadline": 3600})
    with django_capture_on_commit_callbacks(execute=True):
        request.mark_reminded()
    assert rung == [(request.pk, "requested"), (request.pk, "reminder")]


# ------------------------------------------------------------------ over real SMTP
def test_request_emails_go_out_over_smtp_with_both_parts_and_the_signed_reply_to(people):
    _run, request = start_gated(people.owner)
    with (
        smtp_server() as (port, inbox),
        override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
            EMAIL_USE_TLS=False,
            EMAIL_HOST_USER="",
            EMAIL_HOST_PASSWORD="",
            EMAIL_TIMEOUT=10,
        ),
    ):
        assert send_request_emails(request.pk, "requested") == 4
        messages = list(inbox.messages)  # the server answered 250 before send() returned
    assert sorted(rcpt for _, [rcpt], _ in messages) == DECIDERS
    for _sender, [rcpt], message in messages:
        assert message.get_content_type() == "multipart/alternative"
        kinds = [part.get_content_type() for part in message.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert f"/approvals/?request={request.pk}" in text
        reply_to = message["Reply-To"].addresses[0].addr_spec
        token = read_token(REPLY_TO.match(reply_to).group(1))
        assert token.request_id == request.pk
        assert ApprovalEmail.objects.get(to=rcpt).message_id == message["Message-ID"]


# ------------------------------------------------------------------ tokens
def test_tokens_survive_lower_and_upper_casing_and_fit_a_local_part(people):
    _run, request = start_gated(people.owner)
    address = reply_address(request, people.alice)
    local = address.split("@")[0]
    assert len(local) <= 64  # RFC 5321
    for variant in (address, address.lower(), address.upper()):
        [token] = find_tokens([f"Reply <{variant}>"])
        found = read_token(token)
        assert (found.request_id, found.user_id) == (request.pk, people.alice.pk)


def test_tampered_tokens_are_refused_and_expiry_follows_the_deadline(people, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner, {"deadline": 3600})
    token = REPLY_TO.match(reply_address(request, people.alice)).group(1)
    rid, uid, exp, mac = token.split("-")
    other = people.bob.pk
    for bad in (
        f"{rid}-{int_to_base36(other)}-{exp}-{mac}",  # another person, same signature
        f"{rid}-{uid}-{exp}9-{mac}",  # a later expiry
        f"{rid}-{uid}-{exp}-{'a' * 16}",
        "not-a-token",
    ):
        with pytest.raises(BadToken):
            read_token(bad)
    time_machine.shift(timedelta(minutes=59))
    assert read_token(token).request_id == request.pk
    time_machine.shift(timedelta(minutes=2))
    with pytest.raises(ExpiredToken) as expired:
        read_token(token)
    assert expired.value.token.request_id == request.pk
    assert isinstance(expired.value, signing.SignatureExpired)


@override_settings(AGENTOPS_REPLY_MAX_AGE_HOURS=2)
def test_without_a_deadline_a_token_lives_for_the_maximum_age(people, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    _run, request = start_gated(people.owner)
    assert request.deadline_at is None
    token = REPLY_TO.match(reply_address(request, people.alice)).group(1)
    time_machine.shift(timedelta(hours=1, minutes=59))
    read_token(token)
    time_machine.shift(timedelta(minutes=2))
    with pytest.raises(ExpiredToken):
        read_token(token)


def test_a_rotated_secret_key_still_reads_old_tokens(people, settings):
    _run, request = start_gated(people.owner)
    token = make_token(request.pk, people.alice.pk, timezone.now() + timedelta(hours=1))
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    assert read_token(token).user_id == people.alice.pk
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(BadToken):
        read_token(token)


def test_the_request_status_is_unchanged_by_sending(people):
    _run, request = start_gated(people.owner)
    send_request_emails(request.pk, "requested")
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"


def test_a_request_nobody_can_be_emailed_about_is_marked_and_noted(team, other_team):
    from tests.approvals.support import make_reviewers

    people = make_reviewers(team, other_team)  # nobody has an address
    _run, request = start_gated(people.owner)
    assert send_request_emails(request.pk, "requested") == 0
    request.refresh_from_db()
    assert request.emailed_at is not None  # so the unsent sweep does not read it again
    [event] = Event.objects.filter(run_id=request.run_id, kind="approval.emailed")
    assert event.data["to"] == [] and "email address" in event.data["note"]
    send_request_emails(request.pk, "requested")
    assert Event.objects.filter(run_id=request.run_id, kind="approval.emailed").count() == 1
