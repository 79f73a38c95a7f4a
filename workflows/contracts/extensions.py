"""Contracts of extension actions: what crosses Temporal when a process runs a governed action
or an agent that a user's own package declared (baton/extensions.py).

Every extension action is one activity named after the action (``ap.pay_invoice``) that takes a
:class:`GovernedActionInput` and answers a :class:`GovernedActionOutcome`: the policy decision
taken in the action's own transaction, and the action's result when policy allowed it. Its undo
is the activity ``<action>.compensate`` taking a :class:`CompensateActionInput`. The action's
own argument and result models are the extension's; here they travel as JSON objects, validated
by the activity against those models. Only pydantic and the standard library here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from workflows.contracts.base import Contract
from workflows.contracts.governance import ApprovalGrant, AuditEvent, PolicyDecision
from workflows.contracts.security import Id, Name

__all__ = [
    "COMPENSATE_SUFFIX",
    "CompensateActionInput",
    "CompensateActionOutcome",
    "GovernedActionInput",
    "GovernedActionOutcome",
]

#: An action's undo is the activity ``<action name><COMPENSATE_SUFFIX>``.
COMPENSATE_SUFFIX = ".compensate"


class GovernedActionInput(Contract):
    """One governed extension action: its arguments (the action's argument model, as JSON),
    who asks, the idempotency key, and the approval it carries (policy re-checks it)."""

    action: Name
    args: dict[str, Any]
    tenant: str = ""
    requested_by: Name = "baton"
    idempotency_key: Id
    approval: ApprovalGrant | None = None
    shadow: bool = False
    #: an approved step's buffered audit events, written in the action's own transaction
    audit_events: list[AuditEvent] = Field(default_factory=list)


class GovernedActionOutcome(Contract):
    """What policy decided in the action's transaction, and the action's result (its result
    model, as JSON) when it ran: ``result`` is None unless the verdict is ``allow``."""

    decision: PolicyDecision
    result: dict[str, Any] | None = None
    action_id: str | None = None  # the governed_action row of a done action


class CompensateActionInput(Contract):
    """Undo the action done under ``original_key``: a no-op when it never ran or was undone."""

    action: Name
    original_key: Id
    reason: str = ""


class CompensateActionOutcome(Contract):
    undone: bool
    action_id: str | None = None
