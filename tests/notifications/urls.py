"""The project's URLs plus django-anymail's webhooks (the ESP-facing endpoints)."""

from __future__ import annotations

from django.urls import include, path

from agentops.urls import urlpatterns as project

urlpatterns = [path("anymail-test/", include("anymail.urls")), *project]
