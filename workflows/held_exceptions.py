"""Exceptions a governed process holds: entries policy denied, never acted on, listed in the
run's result, its memo, its current details (the Web UI) and its status (``ProcessStatus``,
`baton close exceptions`); before the process finishes, policy decides on them
(:meth:`workflows.process_base.GovernedProcess.sign_off_exceptions`).

Pure functions over the contracts (workflows/contracts/): no I/O, safe in workflow code.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from workflows.contracts import AdjustingEntry, CloseException, PolicyDecision

__all__ = [
    "exceptions_details",
    "exceptions_policy_input",
    "exceptions_section",
    "exceptions_total",
    "hold_denied",
]


def hold_denied(
    entries: list[AdjustingEntry], denied: list[PolicyDecision]
) -> tuple[list[CloseException], list[AdjustingEntry]]:
    """The entries policy denied, as exceptions (with policy's reasons and decision), and the
    entries that go on."""
    by_id = {d.subject: d for d in denied}
    held = [
        CloseException(
            entry_id=e.entry_id,
            account=e.account,
            amount=e.amount,
            reasons=by_id[e.entry_id].reasons,
            decision_id=by_id[e.entry_id].decision_id,
        )
        for e in entries
        if e.entry_id in by_id
    ]
    return held, [e for e in entries if e.entry_id not in by_id]


def exceptions_policy_input(exceptions: list[CloseException], **facts: Any) -> dict[str, Any]:
    """What policy baton/finance/close_exceptions is asked: the close's ``facts`` (tenant,
    period, requester, preparer) and each open exception."""
    return {
        "action": "close_with_exceptions",
        **facts,
        "exceptions": [
            {
                "entry_id": e.entry_id,
                "account": e.account,
                "amount": float(e.amount),
                "reasons": e.reasons,
            }
            for e in exceptions
        ],
    }


def exceptions_total(exceptions: list[CloseException]) -> Decimal:
    """The open exceptions' total, by size whatever the sign (as the close policy counts it)."""
    return sum((abs(e.amount) for e in exceptions), Decimal("0"))


def exceptions_details(exceptions: list[CloseException]) -> str:
    """The run's current details in the Web UI while it has open exceptions."""
    lines = [
        f"**{len(exceptions)} open exceptions** (denied by policy, not posted), "
        f"total {exceptions_total(exceptions)}:"
    ]
    lines += [
        f"- {e.entry_id} {e.amount} to {e.account}: {'; '.join(e.reasons)} "
        f"(decision {e.decision_id})"
        for e in exceptions
    ]
    return "\n".join(lines)[:4000]


def exceptions_section(exceptions: list[CloseException]) -> str:
    """The close memo's section on the exceptions (empty when there are none)."""
    if not exceptions:
        return ""
    lines = [
        "",
        "",
        f"Exceptions held (denied by policy, not posted; total {exceptions_total(exceptions)}):",
    ]
    lines += [
        f"- {e.entry_id}: {e.amount} to {e.account}: {'; '.join(e.reasons)} "
        f"(policy decision {e.decision_id})"
        for e in exceptions
    ]
    return "\n".join(lines)
