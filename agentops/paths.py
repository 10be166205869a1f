"""``{% path "name" %}``: ``{% url "name" %}`` for a URL without arguments, reversed once
per process (per URL configuration and script prefix) rather than on every render.

Every page's navigation names eight such URLs and the runs list eight more; reversing one
costs about 13 µs (more under daphne, where the prefix and the URL configuration are
context-local), a twentieth of the list page's time in all."""

from __future__ import annotations

import functools
import uuid

from django import template
from django.urls import get_script_prefix, get_urlconf, reverse

register = template.Library()


@register.simple_tag
def path(name: str) -> str:
    return _reversed(name, get_script_prefix(), get_urlconf())


@functools.lru_cache(maxsize=256)
def _reversed(name: str, prefix: str, urlconf: str | None) -> str:
    return reverse(name, urlconf=urlconf)


def id_path_format(name: str) -> str:
    """The URL of ``name`` for one UUID argument as a ``str.format`` template (``"/runs/{}/"``),
    reversed once per process, for a page that links 50 rows to their runs."""
    return _id_format(name, get_script_prefix(), get_urlconf())


@functools.lru_cache(maxsize=64)
def _id_format(name: str, prefix: str, urlconf: str | None) -> str:
    zero = str(uuid.UUID(int=0))
    url = reverse(name, args=[zero], urlconf=urlconf)
    return url.replace("{", "{{").replace("}", "}}").replace(zero, "{}")
