"""``{% path %}`` answers as ``{% url %}`` does, under whatever script prefix is current."""

from __future__ import annotations

import uuid

from django.template import Context, Template
from django.urls import reverse, set_script_prefix

from agentops.paths import id_path_format, path


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


def test_an_id_path_matches_reverse_under_any_prefix() -> None:
    run_id = uuid.uuid4()
    try:
        for prefix in ("/", "/ops/", "/"):
            set_script_prefix(prefix)
            for name in ("run-detail", "run-cancel"):
                expected = reverse(name, args=[run_id])
                assert id_path_format(name).format(run_id) == expected
                assert expected.startswith(prefix)
    finally:
        set_script_prefix("/")
