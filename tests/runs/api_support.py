"""Helpers of the API tests: members with roles, their tokens, and a JSON test client."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.test import Client

from runs.api_models import ApiToken
from runs.models import Membership, Team

PROBLEM = "application/problem+json"


def member(username: str, team: Team, role: str = Membership.Role.OPERATOR) -> Any:
    user, _ = get_user_model().objects.get_or_create(username=username)
    Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    return user


def set_role(user: Any, team: Team, role: str) -> None:
    Membership.objects.filter(user=user, team=team).update(role=role)


class ApiClient:
    """The Django test client speaking JSON with a bearer token (or a session)."""

    def __init__(self, token: str | None = None, *, client: Client | None = None) -> None:
        self.client = client or Client()
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        out = dict(headers or {})
        if self.token:
            out.setdefault("Authorization", f"Bearer {self.token}")
        return out

    def get(self, path: str, headers: dict[str, str] | None = None, **query: Any) -> Any:
        return self.client.get(path, query, headers=self._headers(headers))

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        raw: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self.client.post(
            path, data, content_type="application/json", headers=self._headers(headers)
        )


def token_client(user: Any, team: Team) -> ApiClient:
    _, text = ApiToken.mint(user=user, team=team, name="test")
    return ApiClient(text)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem object with ``status``."""
    assert response.status_code == status, (response.status_code, response.content[:2000])
    assert response["Content-Type"] == PROBLEM, response["Content-Type"]
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body
