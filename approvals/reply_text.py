"""Reading a reply: its text, the command on its first line, and the comment after it without
the quoted email and the signature.

Mail clients quote differently: Gmail and Apple Mail write "On <date>, <who> wrote:" (which may
wrap onto a second line) and quote with "> "; Outlook writes "-----Original Message-----" or a
"From: / Sent: / To: / Subject:" block, often after a line of underscores; signatures start at
"-- " or are a "Sent from my …" line. Everything from the first such marker on is dropped, and
so is any line quoted with ">".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

__all__ = ["COMMANDS", "ParsedReply", "body_text", "parse_reply"]

COMMANDS = ("approve", "reject", "pause")
MAX_CHARS = 20_000

_COMMAND = re.compile(
    # "APPROVE", "approve.", "*Approve*!", "Reject - wrong list": the word, punctuation, the rest
    r"^[\s*_]*(?P<word>[a-z]+)[\s*_]*[.!,;:)\-\u2013\u2014]*\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_WROTE = re.compile(
    r"^(on|le|am|el|op|il)\s.+(wrote|a écrit|schrieb|escribió|schreef|ha scritto)\s*:\s*$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(r"^-{2,}\s*(original message|forwarded message)\s*-{2,}", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\*?(from|von|de):\*?\s", re.IGNORECASE)
_HEADER_NEXT = re.compile(r"^\*?(sent|date|to|subject|cc|gesendet|envoyé):\*?\s", re.IGNORECASE)
_SIGNATURE = re.compile(
    r"^(--|sent from my |sent from outlook|get outlook for |sent with proton)", re.IGNORECASE
)
_RULE = re.compile(r"^_{10,}\s*$")


@dataclass(frozen=True)
class ParsedReply:
    command: str  # one of COMMANDS, or "" when the first line is not one
    first_line: str
    comment: str


def _cut_at(lines: list[str]) -> int:
    """The index of the first line of quoted email or signature (``len(lines)`` if none)."""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if line.rstrip("\r") in ("-- ", "--") or _SIGNATURE.match(stripped):
            return i
        if _ORIGINAL.match(stripped) or (_RULE.match(stripped) and i + 1 < len(lines)):
            return i
        if stripped.lower().startswith(("on ", "le ", "am ", "el ", "op ", "il ")):
            # "On Mon, 3 Mar 2026 at 10:00, agentops <reply+…@example.com>\nwrote:"
            for j in range(i, min(i + 3, len(lines))):
                if _WROTE.match(" ".join(x.strip() for x in lines[i : j + 1])):
                    return i
        if _HEADER_FROM.match(stripped) and any(
            _HEADER_NEXT.match(x.strip()) for x in lines[i + 1 : i + 5]
        ):
            return i
    return len(lines)


def parse_reply(text: str) -> ParsedReply:
    """The command on the first non-empty line (case-insensitive, trailing punctuation
    allowed, anything after it on that line starts the comment) and the comment."""
    lines = (text or "")[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = lines[: _cut_at(lines)]
    lines = [line.rstrip() for line in lines if not line.lstrip().startswith(">")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ParsedReply("", "", "")
    first = lines[0].strip()
    match = _COMMAND.match(first)
    command = ""
    rest = ""
    if match and match.group("word").lower() in COMMANDS:
        command = match.group("word").lower()
        rest = match.group("rest").strip()
    body = "\n".join([rest, *lines[1:]] if command else lines).strip()
    body = re.sub(r"\n{3,}", "\n\n", body)
    return ParsedReply(command, first, body)


class _TextOfHtml(HTMLParser):
    """HTML to text, one block per line; scripts, styles and quoted blocks are dropped."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre"}
    SKIP = {"script", "style", "head", "title", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(" ".join(data.split(" ")).replace("\n", " "))

    def text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self.parts).split("\n")]
        return "\n".join(lines)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html[: MAX_CHARS * 5])
    parser.close()
    return parser.text()


def _content(part: Message) -> str:
    try:
        return str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, AttributeError, ValueError):  # unknown charset, or a compat32 Message
        raw = part.get_payload(decode=True) or b""
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _first_part(message: Message, subtype: str) -> Message | None:
    get_body = getattr(message, "get_body", None)
    if get_body is not None:
        return get_body(preferencelist=(subtype,))
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}" and not part.is_multipart():
            return part
    return None


def body_text(message: Message) -> str:
    """The reply's text: the text/plain part, or the HTML part without its tags when there is
    no plain part or it says nothing."""
    plain = _first_part(message, "plain")
    if plain is not None:
        text = _content(plain)
        if parse_reply(text).first_line:
            return text
    html = _first_part(message, "html")
    if html is not None:
        return html_to_text(_content(html))
    return _content(plain) if plain is not None else ""
