"""Request input that the database could not store is refused at the door (400), not at the
INSERT (500).

- Bodies are strict JSON (RFC 8259): no ``NaN`` or ``Infinity``, no number beyond a float's
  range (``1e999``), no NUL character and no lone surrogate in any string or key. Python's
  ``json`` accepts all of these; SQLite's and PostgreSQL's JSON columns refuse them.
- Paths and query strings carry no NUL character: PostgreSQL text cannot hold one, so even
  a lookup with one fails.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser


class BodyRefused(ValueError):
    """A body that parses as Python's JSON but is not storable JSON; its message says why."""


def _refuse_constant(name: str) -> Any:
    raise BodyRefused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused(f"the number {text[:40]} is too large")
    return value


def unstorable(value: str) -> str:
    """Why ``value`` cannot be stored as text ("" if it can)."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return ""


def _check(value: Any, where: str) -> None:
    # Iterative: a deeply nested body must not exhaust the stack here either.
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            reason = unstorable(item)
            if reason:
                raise BodyRefused(f"{at}: the text {reason}")
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = unstorable(key)
                if reason:
                    raise BodyRefused(f"{at}: a key {reason}")
                stack.append((child, f"{at}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in enumerate(item))


class StrictJSONParser(Parser):
    """ninja's body parser, refusing what could not be stored (see the module docstring)."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = json.loads(request.body, parse_constant=_refuse_constant, parse_float=_finite)
        _check(data, "body")
        return data


def refused_url(request: HttpRequest) -> str:
    """Why the request's path or query string cannot be served ("" if it can)."""
    if "\x00" in request.path:
        return "the path contains a NUL character"
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            return f"the query parameter {key!r} contains a NUL character"
    return ""
