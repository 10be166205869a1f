"""The mail viewer: staff read the emails the embedded default stores; the HTML part is only
ever a separate document under a strict policy in a sandboxed frame; everyone else gets 404."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from notifications.models import Channel, Message
from runs.models import Team
from tests.notifications.support import People, make_people, pump, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]

HOSTILE_HTML = (
    "<html><body><script>parent.document.title='owned'</script>"
    '<img src="https://tracker.example/p.gif"><p style="color: red">Hello from the agent</p>'
    "</body></html>"
)


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("sam", password="a-long-test-password", is_staff=True)


def client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def email(user: User, **kw: object) -> Message:
    kw.setdefault("subject", "Failed: <b>t-steps</b>")
    kw.setdefault("text", "The agent wrote: <script>alert(1)</script>")
    kw.setdefault("html", HOSTILE_HTML)
    return Message.objects.create(user=user, channel=Channel.EMAIL, **kw)


def test_only_staff_may_look(people, staff) -> None:
    message = email(people.owner)
    urls = ["/notifications/mail/", f"/notifications/mail/{message.pk}/"]
    urls.append(f"/notifications/mail/{message.pk}/html/")
    for url in urls:
        assert Client().get(url).status_code == 302  # sign in first
        assert client_of(people.owner).get(url).status_code == 404  # not even its recipient
        assert client_of(staff).get(url).status_code == 200
    # An in-app message is no email: 404 in the viewer.
    other = Message.objects.create(user=people.owner, channel=Channel.IN_APP, subject="x", text="")
    assert client_of(staff).get(f"/notifications/mail/{other.pk}/").status_code == 404
    # Deactivated staff are nobody (their session no longer signs them in).
    viewer = client_of(staff)
    staff.is_active = False
    staff.save()
    assert viewer.get("/notifications/mail/").status_code == 302


def test_the_stored_emails_of_a_finished_run_are_listed_and_readable(people, staff, drive) -> None:
    run = drive(start(people.owner).pk)
    pump()
    stored = Message.objects.get(channel=Channel.EMAIL)
    assert stored.status == Message.Status.SENT and len(mail.outbox) == 1
    viewer = client_of(staff)
    listing = viewer.get("/notifications/mail/").content.decode()
    assert "owner@example.com" in listing
    assert f'href="/notifications/mail/{stored.pk}/"' in listing
    assert stored.subject in listing and "badge-sent" in listing
    detail = viewer.get(f"/notifications/mail/{stored.pk}/").content.decode()
    assert f"/runs/{run.pk}/" in detail  # the text part, with its link
    assert "What comes next" in detail


def test_the_html_part_is_sandboxed_never_inlined(people, staff) -> None:
    message = email(people.owner)
    viewer = client_of(staff)
    detail = viewer.get(f"/notifications/mail/{message.pk}/").content.decode()
    # The page itself holds none of the HTML part, and escapes the text part.
    assert "tracker.example" not in detail and "parent.document" not in detail
    assert "<script>alert(1)" not in detail
    assert "The agent wrote: &lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "Failed: &lt;b&gt;t-steps&lt;/b&gt;" in detail
    frame = re.search(r"<iframe[^>]*>", detail)
    assert frame, "no frame for the HTML part"
    assert 'sandbox=""' in frame.group(0)
    assert f'src="/notifications/mail/{message.pk}/html/"' in frame.group(0)

    part = viewer.get(f"/notifications/mail/{message.pk}/html/")
    assert part["Content-Type"] == "text/html; charset=utf-8"
    assert part.content.decode() == HOSTILE_HTML  # as sent: the policy keeps it harmless
    policy = {
        d.strip().split(" ", 1)[0]: d.strip() for d in part["Content-Security-Policy"].split(";")
    }
    assert policy["default-src"] == "default-src 'none'"  # no script, no fetch, no tracker
    assert policy["img-src"] == "img-src data:"
    assert "sandbox" in policy and policy["frame-ancestors"] == "frame-ancestors 'self'"
    assert "script-src" not in policy
    assert part["X-Frame-Options"] == "SAMEORIGIN"
    assert "no-store" in part["Cache-Control"] or "max-age=0" in part["Cache-Control"]
    # Our own pages keep the site's policy: no framing of them at all.
    assert "frame-ancestors 'none'" in viewer.get("/notifications/mail/")["Content-Security-Policy"]


def test_an_email_without_html_says_so(people, staff) -> None:
    message = email(people.owner, html="")
    detail = client_of(staff).get(f"/notifications/mail/{message.pk}/").content.decode()
    assert "has no HTML part" in detail and "<iframe" not in detail
