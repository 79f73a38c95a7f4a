"""The errors Baton's clients raise on purpose (a process already started under its business key,
a refused approval, nothing pending). Their own module so every client (workflows/client.py,
workflows/client_auction.py, workflows/support_client.py) raises the same classes without
importing each other; workflows/client.py re-exports them.
"""

from __future__ import annotations

from workflows.errors import BatonError

__all__ = ["ApprovalRefused", "BatonClientError", "NoPendingApproval", "ProcessAlreadyStarted"]


class BatonClientError(BatonError):
    """Base of the errors this client raises on purpose."""


class ProcessAlreadyStarted(BatonClientError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"a process with business key {workflow_id!r} is already running or has completed; "
            "pass join_existing=True (CLI: --join) to attach to a running one"
        )
        self.workflow_id = workflow_id


class ApprovalRefused(BatonClientError):
    """The workflow's validator refused a decision; ``reason`` says why. Nothing was recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"approval refused: {reason}")
        self.reason = reason


class NoPendingApproval(BatonClientError):
    pass
