"""Shared fixtures: teams, users, and driving runs in-process the way a worker does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from runs import engine
from runs.models import Run, RunStatus, Team


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_pg = bool(os.environ.get("AGENTOPS_TEST_PG_URL"))
    for item in items:
        if "pg" in item.keywords and not on_pg:
            item.add_marker(
                pytest.mark.skip(reason="needs PostgreSQL + Redis (python -m tests.servers)")
            )


@pytest.fixture
def team(db: None) -> Team:
    return Team.objects.get_or_create(slug="default", defaults={"name": "Default team"})[0]


@pytest.fixture
def other_team(db: None) -> Team:
    return Team.objects.create(slug="other", name="Other team")


def drive_to_rest(run_id: Any, *, max_slices: int = 50) -> Run:
    """Drive a run in this thread until it stops being runnable (finished, waiting, paused)."""
    for _ in range(max_slices):
        outcome = engine.drive(run_id)
        run = Run.objects.get(pk=run_id)
        if outcome == "skipped" or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            return run
    raise AssertionError(f"run {run_id} still runnable after {max_slices} slices")


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30, every: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(every)


def doorbells(callbacks: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
    """The on-commit callbacks that ring the doorbell (others announce changes to pages)."""
    return [c for c in callbacks if getattr(c, "__qualname__", "").startswith("ring")]


@pytest.fixture
def drive() -> Callable[..., Run]:
    return drive_to_rest


@pytest.fixture
def is_sqlite() -> bool:
    return settings.IS_SQLITE
