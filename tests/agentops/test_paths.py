"""``{% path %}`` answers as ``{% url %}`` does, under whatever script prefix is current."""

from __future__ import annotations

from django.template import Context, Template
from django.urls import reverse, set_script_prefix

from agentops.paths import path


def test_it_matches_url_and_follows_the_script_prefix() -> None:
    try:
        for prefix in ("/", "/ops/", "/", "/other/"):
            set_script_prefix(prefix)
            for name in ("run-list", "run-new", "dashboard", "admin:index", "logout"):
                assert path(name) == reverse(name)
                assert path(name).startswith(prefix)
            html = Template("{% load paths %}{% path 'run-list' %}|{% url 'run-list' %}").render(
                Context()
            )
            first, second = html.split("|")
            assert first == second
    finally:
        set_script_prefix("/")
