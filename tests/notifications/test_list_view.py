"""The in-app list behind the bell: each person sees and marks only their own messages, the
bell counts what is unread, pages are bounded, and agent output is escaped."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from notifications import bell
from notifications.models import Channel, Message
from runs.models import Team
from tests.notifications.support import People, make_people, pump, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


@pytest.fixture
def people(team: Team, other_team: Team) -> People:
    return make_people(team, other_team)


def client_of(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def in_app(user: User, subject: str = "Succeeded: t-steps", **kw: object) -> Message:
    kw.setdefault("text", "All done.")
    return Message.objects.create(user=user, channel=Channel.IN_APP, subject=subject, **kw)


def bell_of(html: str) -> str:
    found = re.search(r'<span id="notifications-bell"[^>]*>.*?</span></span>', html, re.S)
    assert found, "no bell on the page"
    return found.group(0)


def test_the_list_needs_a_sign_in(client: Client) -> None:
    response = client.get("/notifications/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/notifications/read-all/").status_code == 302


def test_the_bell_alone_is_what_a_page_without_its_socket_polls(
    client: Client, people: People
) -> None:
    assert client.get("/notifications/bell/").status_code == 302  # signed in only
    in_app(people.owner)
    in_app(people.owner, read_at=timezone.now())
    in_app(people.mate)
    owner = client_of(people.owner)
    once = owner.get("/notifications/bell/").content.decode()
    assert re.match(r'<span id="notifications-bell"[^>]*>1<span', once)
    assert 'data-poll-url="/notifications/bell/?poll=1"' in once and "hx-trigger" not in once
    # While polling, the answer keeps polling; a push carries no polling attributes.
    polled = owner.get("/notifications/bell/?poll=1").content.decode()
    assert 'hx-trigger="every 15s"' in polled and 'hx-get="/notifications/bell/?poll=1"' in polled
    pushed = bell.render_bell(people.owner)
    assert "hx-trigger" not in pushed and 'hx-swap-oob="true"' in pushed
    assert re.match(
        r'<span id="notifications-bell"[^>]* hidden',
        client_of(people.outsider).get("/notifications/bell/").content.decode(),
    )


def test_a_finished_run_rings_its_owners_bell_and_lists_the_message(people, drive) -> None:
    run = drive(start(people.owner).pk)
    pump()
    message = Message.objects.get(user=people.owner, channel=Channel.IN_APP)
    page = client_of(people.owner).get("/notifications/")
    assert page.status_code == 200
    html = page.content.decode()
    assert message.subject in html
    assert f'href="/runs/{run.pk}/"' in html  # the link to the run
    assert '>1<span class="visually-hidden"> unread</span>' in bell_of(html)
    # Nobody else's bell rings, and nobody else lists it.
    other = client_of(people.mate).get("/notifications/").content.decode()
    assert message.subject not in other
    assert " hidden" in bell_of(other)


def test_each_person_sees_and_marks_only_their_own(people) -> None:
    mine = in_app(people.owner, "mine")
    theirs = in_app(people.mate, "theirs")
    owner = client_of(people.owner)
    html = owner.get("/notifications/").content.decode()
    assert "mine" in html and "theirs" not in html
    # Another person's message id is a 404 and stays unread.
    assert owner.post(f"/notifications/{theirs.pk}/read/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None
    # Email messages are not in-app notifications: not listed, not markable here.
    email = Message.objects.create(
        user=people.owner, channel=Channel.EMAIL, subject="an email", text="x"
    )
    assert "an email" not in owner.get("/notifications/").content.decode()
    assert owner.post(f"/notifications/{email.pk}/read/").status_code == 404
    assert owner.get(f"/notifications/{mine.pk}/read/").status_code == 405  # POST only


def test_mark_one_read_then_all_read(people) -> None:
    first, second, third = (in_app(people.owner, f"n{i}") for i in range(3))
    other = in_app(people.mate, "not yours")
    owner = client_of(people.owner)
    assert bell.unread_count(people.owner) == 3

    response = owner.post(f"/notifications/{second.pk}/read/")
    assert response.status_code == 302 and response["Location"] == "/notifications/"
    second.refresh_from_db()
    assert second.read_at is not None
    assert bell.unread_count(people.owner) == 2
    # Marking it again changes nothing (its time of reading stays).
    read_at = second.read_at
    owner.post(f"/notifications/{second.pk}/read/")
    second.refresh_from_db()
    assert second.read_at == read_at

    # With htmx: the item comes back read, and the bell of this page out of band.
    response = owner.post(f"/notifications/{first.pk}/read/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="notification-{first.pk}" class="notification"' in html
    assert 'id="notifications-bell"' in html and 'hx-swap-oob="true"' in html
    assert ">1<span" in bell_of(html)

    response = owner.post("/notifications/read-all/", follow=True)
    assert "Marked 1 notification read." in response.content.decode()
    assert bell.unread_count(people.owner) == 0
    third.refresh_from_db()
    other.refresh_from_db()
    assert third.read_at is not None and other.read_at is None
    response = owner.post("/notifications/read-all/", follow=True)
    assert "Nothing was unread." in response.content.decode()


def test_the_bell_stops_counting_at_its_cap(people) -> None:
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            user=people.owner,
            channel=Channel.IN_APP,
            subject=f"n{i}",
            text="",
            created_at=now - timedelta(seconds=i),
        )
        for i in range(bell.BELL_CAP + 5)
    )
    assert bell.unread_count(people.owner) == bell.BELL_CAP + 1
    html = client_of(people.owner).get("/runs/").content.decode()
    assert f">{bell.BELL_CAP}+<span" in bell_of(html)


def test_pages_are_bounded_and_follow_on(people) -> None:
    now = timezone.now()
    total = bell.PAGE_SIZE + 5
    Message.objects.bulk_create(
        Message(
            user=people.owner,
            channel=Channel.IN_APP,
            subject=f"number {i:03d}",
            text="",
            # Some share a creation time: the id breaks the tie.
            created_at=now - timedelta(seconds=i // 2),
        )
        for i in range(total)
    )
    owner = client_of(people.owner)
    first = owner.get("/notifications/").content.decode()
    shown = re.findall(r"notification-subject\">number (\d{3})", first)
    assert len(shown) == bell.PAGE_SIZE
    older = re.search(r'href="(/notifications/\?before=[^"]+)" rel="next"', first)
    assert older, "no link to older notifications"
    second = owner.get(older.group(1).replace("&amp;", "&")).content.decode()
    rest = re.findall(r"notification-subject\">number (\d{3})", second)
    assert len(rest) == 5
    assert set(shown) | set(rest) == {f"{i:03d}" for i in range(total)}
    assert 'rel="next"' not in second and 'href="/notifications/">Newest' in second
    # A forged cursor is ignored, not an error.
    assert owner.get("/notifications/?before=1_2_3%3Cx").status_code == 200


def test_agent_output_is_escaped(people) -> None:
    in_app(
        people.owner,
        subject="<script>alert('subject')</script>",
        text="The agent said: <img src=x onerror=alert(1)>\nsecond line",
        body={"events": [{"run_id": "javascript:alert(1)"}]},
    )
    html = client_of(people.owner).get("/notifications/").content.decode()
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;subject&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;<br>second line" in html
    assert "javascript:" not in html  # a run id that is no UUID never becomes a link


def test_a_digest_links_its_runs(people, drive) -> None:
    runs = [drive(start(people.owner).pk) for _ in range(2)]
    in_app(
        people.owner,
        subject="2 updates on 2 run(s)",
        body={"events": [{"run_id": str(r.pk)} for r in runs]},
    )
    html = client_of(people.owner).get("/notifications/").content.decode()
    for run in runs:
        assert f'href="/runs/{run.pk}/">Run {str(run.pk)[:8]}</a>' in html
