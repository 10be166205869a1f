"""``{% path "name" %}``: ``{% url "name" %}`` for a URL without arguments, reversed once
per process (per URL configuration and script prefix) rather than on every render.

Every page's navigation names eight such URLs and the runs list eight more; reversing one
costs about 13 µs (more under daphne, where the prefix and the URL configuration are
context-local), a twentieth of the list page's time in all."""

from __future__ import annotations

import functools

from django import template
from django.urls import get_script_prefix, get_urlconf, reverse

register = template.Library()


@register.simple_tag
def path(name: str) -> str:
    return _reversed(name, get_script_prefix(), get_urlconf())


@functools.lru_cache(maxsize=256)
def _reversed(name: str, prefix: str, urlconf: str | None) -> str:
    return reverse(name, urlconf=urlconf)
