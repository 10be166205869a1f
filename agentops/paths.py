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


def path(name: str) -> str:
    """``reverse(name)`` for a URL without arguments, reversed once per process."""
    return _reversed(name, get_script_prefix(), get_urlconf())


@register.simple_tag(name="path", takes_context=True)
def path_tag(context: template.Context, name: str) -> str:
    # The prefix and the URL configuration are context-local (asgiref's ``Local``, a few
    # microseconds a read): read once a render, which they cannot change during.
    render = context.render_context.dicts[0]
    where = render.get(_WHERE)
    if where is None:
        where = render[_WHERE] = (get_script_prefix(), get_urlconf())
    return _reversed(name, *where)


_WHERE = object()


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
