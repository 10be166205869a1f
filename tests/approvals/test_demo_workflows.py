"""The demo workflows with a person in the loop, driven in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core import mail
from django.test import override_settings

from approvals.models import ApprovalRequest
from runs.exceptions import InputInvalid
from runs.models import Run, RunStatus
from tests.approvals.support import make_reviewers

pytestmark = [pytest.mark.django_db]
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def people(team, other_team):
    return make_reviewers(team, other_team)


def test_digest_publish_waits_for_approval_then_publishes_the_edited_title(
    people, drive, tmp_path: Path, settings
):
    settings.AGENTOPS_DATA_DIR = tmp_path
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.py").write_text('"""A."""\ndef f():\n    pass\n')
    run = Run.start(
        "digest-publish", {"corpus": str(tmp_path / "corpus")}, actor="t", user=people.owner
    )[0]
    run = drive(run.pk)
    assert run.status == RunStatus.WAITING and run.progress["stage"] == "waiting for approval"
    request = ApprovalRequest.objects.get(run=run)
    assert request.payload["files"] == 1 and request.editable == ["title"]
    assert not (tmp_path / "reports").exists()  # nothing published before the decision
    request.decide(people.alice, "approve", edits={"title": "Digest, reviewed"})
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.result["published"] is True
    published = json.loads(Path(run.result["path"]).read_text())
    assert published["title"] == "Digest, reviewed" and published["files"] == 1


@override_settings(EMAIL_BACKEND=LOCMEM)
def test_draft_email_sends_the_reviewers_edit(people, drive):
    run = Run.start("draft-email", {"to": ["a@example.com"]}, actor="t", user=people.owner)[0]
    run = drive(run.pk)
    request = ApprovalRequest.objects.get(run=run)
    assert request.payload["subject"].startswith("About ") and mail.outbox == []
    request.decide(
        people.alice, "approve", edits={"subject": "Planning: add your items", "body": "Short."}
    )
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.result["edited"] == ["body", "subject"]
    sent = [m for m in mail.outbox if m.subject == "Planning: add your items"]
    assert len(sent) == 1 and sent[0].body == "Short." and sent[0].to == ["a@example.com"]


@override_settings(EMAIL_BACKEND=LOCMEM)
def test_draft_email_rejected_sends_nothing(people, drive):
    run = drive(Run.start("draft-email", {}, actor="t", user=people.owner)[0].pk)
    ApprovalRequest.objects.get(run=run).decide(people.bob, "reject", comment="not now")
    run = drive(run.pk)
    assert run.result == {"sent": False, "outcome": "rejected", "comment": "not now"}
    assert not [m for m in mail.outbox if m.subject.startswith("About ")]


def test_draft_email_validates_its_recipients(people):
    with pytest.raises(InputInvalid):
        Run.start("draft-email", {"to": ["not an address"]}, actor="t", user=people.owner)
