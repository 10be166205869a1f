"""The user read written as SQL (``agentops.auth.ModelBackend``) answers as Django's
``ModelBackend`` does: the same user with every field converted as the ORM converts it,
nobody for an unknown id or an inactive person; and the migration that moved signed-in
sessions from Django's backend to it keeps them signed in. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from agentops.auth import ModelBackend
from agentops.sessions import SessionStore

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

migration = importlib.import_module("agentops.migrations.0001_sessions_name_agentops_model_backend")


def test_reads_the_user_as_djangos_backend_does() -> None:
    user = User.objects.create_user(
        "sam", email="sam@example.com", password="pw-long-enough-1", first_name="Sam é"
    )
    User.objects.filter(pk=user.pk).update(last_login=datetime(2026, 5, 1, 9, 30, tzinfo=UTC))
    ours, django = ModelBackend().get_user(user.pk), DjangoModelBackend().get_user(user.pk)
    assert ours is not None and django is not None
    fields = [f.attname for f in User._meta.concrete_fields]
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(django, f) for f in fields}
    assert ours.last_login == datetime(2026, 5, 1, 9, 30, tzinfo=UTC)  # an aware datetime
    assert ours.is_active is True and ours._state.adding is False
    assert ours._state.db == "default"
    ours.first_name = "Samuel"
    ours.save(update_fields=["first_name"])  # a loaded instance, saved as an update
    assert User.objects.get(pk=user.pk).first_name == "Samuel"


def test_nobody_for_an_unknown_id_or_an_inactive_person() -> None:
    user = User.objects.create_user("ina", password="pw-long-enough-1")
    assert ModelBackend().get_user(user.pk + 1000) is None
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert ModelBackend().get_user(user.pk) is None


def test_a_deactivated_person_is_signed_out_at_their_next_request(client: Client) -> None:
    user = User.objects.create_user("dee", password="pw-long-enough-1")
    client.force_login(user)
    assert client.get("/runs/").status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    response = client.get("/runs/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def _session_naming(backend: str, user: User) -> str:
    s = SessionStore()
    s["_auth_user_id"] = str(user.pk)
    s["_auth_user_backend"] = backend
    s["_auth_user_hash"] = user.get_session_auth_hash()
    s.save()
    return str(s.session_key)


def _migrate(step: Any) -> None:
    step(apps, SimpleNamespace(connection=connection))


def test_sessions_naming_djangos_backend_stay_signed_in_across_the_migration() -> None:
    user = User.objects.create_user("old", password="pw-long-enough-1")
    old = _session_naming(migration.OLD, user)
    other = _session_naming("runs.permissions.TeamRoleBackend", user)
    client = Client()
    client.cookies["sessionid"] = old
    # Before: the settings no longer name Django's backend, so the session is signed out.
    assert client.get("/runs/").status_code == 302
    old = _session_naming(migration.OLD, user)
    client.cookies["sessionid"] = old
    _migrate(migration.forwards)
    assert SessionStore(old).load()["_auth_user_backend"] == "agentops.auth.ModelBackend"
    assert SessionStore(other).load()["_auth_user_backend"] == "runs.permissions.TeamRoleBackend"
    response = client.get("/runs/")
    assert response.status_code == 200 and response.context["user"] == user
    _migrate(migration.backwards)
    assert SessionStore(old).load()["_auth_user_backend"] == migration.OLD


def test_signing_in_names_this_backend(client: Client) -> None:
    User.objects.create_user("newcomer", password="pw-long-enough-1")
    response = client.post("/login/", {"username": "newcomer", "password": "pw-long-enough-1"})
    assert response.status_code == 302
    assert client.session["_auth_user_backend"] == "agentops.auth.ModelBackend"
