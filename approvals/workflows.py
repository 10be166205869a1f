"""Demo workflows with a person in the loop (offline, so the embedded console shows them).

- ``digest-publish``: the ``digest`` demo's report waits for an approval before it is
  published (written to the data directory); a reviewer may retitle it.
- ``draft-email``: drafts an email, a reviewer edits the draft (subject and body), and only
  then does the send step use the edited text. Rejected or expired: nothing is sent.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Any

from django.conf import settings
from django.core.mail import EmailMessage
from pydantic import BaseModel, Field

from runs.workflow import workflow
from runs.workflows import DigestInput, digest


class DigestPublishInput(DigestInput):
    title: str = Field(default="Standard library digest", max_length=200)
    review_hours: float = Field(default=24, gt=0, le=24 * 14, description="Reviewers' deadline.")


def publish_report(run_id: str, title: str, report: dict[str, Any]) -> str:
    """Write the report where readers find it; idempotent (one file per run)."""
    folder = Path(settings.AGENTOPS_DATA_DIR) / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps({"title": title, **report}, indent=2), encoding="utf-8")
    return str(path)


@workflow(
    name="digest-publish",
    input=DigestPublishInput,
    description="Digest a corpus, then publish the report once a reviewer approves it.",
    budget={"usd": 1.0, "actions": 2500},
    deadline=15 * 24 * 3600,
)
def digest_publish(ctx: Any, data: DigestPublishInput) -> dict[str, Any]:
    report = digest(ctx, data)
    ctx.progress(stage="waiting for approval")
    decision = ctx.approval(
        "publish report",
        payload={"title": data.title, "files": report["files"], "largest": report["largest"]},
        editable=["title"],
        deadline=data.review_hours * 3600,
        on_timeout="reject",
    )
    if not decision.approved:
        return {"published": False, "outcome": decision.outcome, "comment": decision.comment}
    ctx.progress(stage="publishing")
    where = ctx.step("publish", publish_report, str(ctx.run_id), decision.payload["title"], report)
    return {"published": True, "title": decision.payload["title"], "path": where, **report}


#: One address, plainly: a local part, "@", and a dotted domain (no display names).
EMAIL = r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$"


class DraftInput(BaseModel):
    to: list[Annotated[str, Field(pattern=EMAIL, max_length=254)]] = Field(
        default=["team@example.com"], min_length=1, max_length=20
    )
    topic: str = Field(default="the quarterly planning meeting", min_length=1, max_length=200)
    review_hours: float = Field(default=4, gt=0, le=24 * 14)


def draft(topic: str) -> dict[str, str]:
    """A stand-in for a model call: a deterministic draft, so the demo runs offline."""
    body = textwrap.dedent(
        f"""\
        Hello all,

        A short note about {topic}. The agenda and the notes from last time are attached to
        the calendar invitation; please add your items by Thursday.

        Thanks,
        the agentops demo agent
        """
    )
    return {"subject": f"About {topic}", "body": body}


def send(to: list[str], subject: str, body: str, key: str) -> dict[str, Any]:
    """Send the approved text. The Message-ID is derived from the step's idempotency key, so
    a receiving system can drop a copy resent after a crash."""
    message = EmailMessage(subject=subject, body=body, to=to)
    message.extra_headers["Message-ID"] = f"<{key.replace(':', '.')}@agentops.demo>"
    message.send()
    return {"to": to, "subject": subject, "message_id": message.extra_headers["Message-ID"]}


@workflow(
    name="draft-email",
    input=DraftInput,
    description="Draft an email; a reviewer edits and approves it before it is sent.",
    budget={"actions": 10},
)
def draft_email(ctx: Any, data: DraftInput) -> dict[str, Any]:
    proposal = ctx.step("draft", draft, data.topic)
    decision = ctx.approval(
        "send email",
        payload={"to": list(data.to), **proposal},
        editable=["subject", "body"],
        deadline=data.review_hours * 3600,
    )
    if not decision.approved:
        return {"sent": False, "outcome": decision.outcome, "comment": decision.comment}
    final = decision.payload
    sent = ctx.step(
        "send", send, list(data.to), final["subject"], final["body"], ctx.idempotency_key()
    )
    return {"sent": True, "edited": sorted(decision.edits), **sent}
