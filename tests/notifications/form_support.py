"""What a browser would submit from a page's form, read from the page's HTML (so a field the
template forgot to render is missing from the POST, as it would be for a person)."""

from __future__ import annotations

from html.parser import HTMLParser

FormData = dict[str, str | list[str]]


class _FormReader(HTMLParser):
    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action = action
        self.inside = False
        self.found = False
        self.data: dict[str, list[str]] = {}
        self.select: tuple[str, bool] | None = None
        self.options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v if v is not None else "" for k, v in attrs}
        if tag == "form" and a.get("action") == self.action and a.get("method") == "post":
            self.inside = self.found = True
            return
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.data.setdefault(name, []).append(a.get("value", "on"))
            elif kind not in ("submit", "button", "file"):
                self.data.setdefault(name, []).append(a.get("value", ""))
        elif tag == "select" and name:
            self.select, self.options = (name, "multiple" in a), []
        elif tag == "option" and self.select is not None:
            self.options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea" and name:
            self.data.setdefault(name, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "select" and self.select is not None:
            name, multiple = self.select
            chosen = [v for v, selected in self.options if selected]
            if not multiple and not chosen and self.options:
                chosen = [self.options[0][0]]  # a single select submits its first option
            self.data[name] = chosen
            self.select = None


def form_data(html: str, action: str) -> FormData:
    """The fields of the POST form whose action is ``action``, as a browser submits them."""
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.found, f"no POST form to {action} on the page"
    return {k: v[0] if len(v) == 1 else v for k, v in reader.data.items() if v}
