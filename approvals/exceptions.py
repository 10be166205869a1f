"""What can go wrong with an approval, as messages a reviewer or an engineer can act on."""

from __future__ import annotations


class ApprovalError(Exception):
    """Base class: the message is shown to the person who tried."""


class NotAllowed(ApprovalError):
    """The person may not decide this request (right now)."""


class NotPending(ApprovalError):
    """The request was already decided, expired or cancelled: the first outcome stands."""

    def __init__(self, request_id: int, status: str) -> None:
        self.request_id = request_id
        self.status = status
        super().__init__(f"approval request {request_id} is already {status}; nothing changed")


class InvalidDecision(ApprovalError):
    """The decision itself is malformed (unknown verdict, a field that is not editable…)."""


class ApprovalExpired(Exception):
    """Raised in the workflow when a request with ``on_timeout="fail"`` passed its deadline.

    Not a subclass of ``ApprovalError``: it is the workflow's failure, not a person's mistake."""


class ApprovalRejected(Exception):
    """Raised by ``ctx.step(..., requires_approval=True)`` when the gate before it did not
    approve: the step never runs."""

    def __init__(self, step: str, outcome: str, comment: str = "") -> None:
        self.step = step
        self.outcome = outcome
        self.comment = comment
        why = f": {comment}" if comment else ""
        super().__init__(f"step {step!r} was not approved ({outcome}){why}")
