"""agentops: an operations console for long-running AI agent runs."""

from __future__ import annotations

from agentops.celery import app as celery_app

__all__ = ["celery_app"]
