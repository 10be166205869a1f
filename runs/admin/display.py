"""Rendering helpers for the admin: agent data is untrusted, so every value is escaped."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString

#: Longest JSON shown on a change page; agent output can be megabytes.
JSON_DISPLAY_LIMIT = 20_000
#: Longest JSON shown in a list column or an inline row.
JSON_PREVIEW_LIMIT = 200
EMPTY = "—"


# --- rendering helpers ----------------------------------------------------------------------
def _dumps(value: Any, *, indent: int | None) -> str:
    return json.dumps(
        value, indent=indent, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder
    )


def pretty_json(value: Any, *, limit: int = JSON_DISPLAY_LIMIT) -> SafeString | str:
    """Indented JSON in a <pre>, escaped (``format_html``) and cut at ``limit`` characters."""
    if value is None or value == {} or value == []:
        return EMPTY
    text = _dumps(value, indent=2)
    more = len(text) - limit
    if more > 0:
        text = f"{text[:limit]}\n… ({more:,} more characters)"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def json_preview(value: Any, *, limit: int = JSON_PREVIEW_LIMIT) -> str:
    """One line of JSON for list columns; a plain string, so the template escapes it."""
    if value is None or value == {} or value == []:
        return EMPTY
    text = _dumps(value, indent=None)
    return text if len(text) <= limit else f"{text[:limit]}…"


def spent_of(spent: Any, limit: Any, *, money: bool = False) -> str:
    """A budget as "spent / limit" ("—" for no limit)."""

    def fmt(v: Any) -> str:
        if v is None:
            return EMPTY
        return f"${Decimal(v):,.4f}" if money else f"{v:,}"

    return f"{fmt(spent)} / {fmt(limit)}"


def json_field(attr: str, *, preview: bool = False) -> Callable[[Any, Any], SafeString | str]:
    """A read-only admin field showing the JSON attribute ``attr``, pretty or as a preview."""

    @admin.display(description=attr)
    def show(self: Any, obj: Any) -> SafeString | str:
        value = getattr(obj, attr)
        return json_preview(value) if preview else pretty_json(value)

    return show
