"""The session read written as SQL (``agentops.sessions``) answers as Django's ORM read did:
the data of a live session, nothing for an expired or unknown one (and the key dropped, so a
new session is made rather than the old key reused). Run on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore as OrmStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from agentops.sessions import SessionStore

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def test_a_live_session_loads_its_data() -> None:
    s = SessionStore()
    s["_auth_user_id"] = "42"
    s["note"] = "é <b>"
    s.save()
    loaded = SessionStore(s.session_key)
    assert loaded.load() == {"_auth_user_id": "42", "note": "é <b>"}
    assert loaded.session_key == s.session_key
    assert OrmStore(s.session_key).load() == loaded.load()  # Django's own read agrees


@pytest.mark.parametrize("seconds", [-1, -86400])
def test_an_expired_session_loads_nothing_and_drops_its_key(seconds: int) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "42"
    s.save()
    Session.objects.filter(session_key=s.session_key).update(
        expire_date=timezone.now() + timedelta(seconds=seconds)
    )
    loaded = SessionStore(s.session_key)
    assert loaded.load() == {}
    assert loaded.session_key is None
    # One that expires a little later is still live.
    Session.objects.filter(session_key=s.session_key).update(
        expire_date=timezone.now() + timedelta(seconds=5)
    )
    assert SessionStore(s.session_key).load() == {"_auth_user_id": "42"}


def test_an_unknown_key_loads_nothing() -> None:
    loaded = SessionStore("x" * 32)
    assert loaded.load() == {}
    assert loaded.session_key is None


def test_the_site_uses_it(client, django_user_model) -> None:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("sam", password="pw-long-enough-1")
    client.force_login(user)
    assert isinstance(client.session, SessionStore)
    assert client.get("/runs/").status_code == 200  # signed in through it
