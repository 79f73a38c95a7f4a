"""What a process definition may call: agent tasks and connector actions, by public name.

Each entry names the registered activity (the activity name is the public contract, see
worker.py), its input and output contracts (the validator type-checks ``with:`` against them,
the interpreter validates the rendered input with them) and whether it is sensitive (a sensitive
action must declare a compensation). Pure data: imported by the validator and the workflow.

Extensions (baton/extensions.py) add their governed actions and agents with :func:`register`
when they are loaded (the worker, the CLI): a governed action's ``with:`` is its own argument
model (``args``), its output the :class:`GovernedActionOutcome` whose ``result`` is its result
model, and it declares its policy and its undo, so a step needs no ``compensation:``. This
module passes through the workflow sandbox, so what the worker registered is what its
workflows see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from workflows.contracts import (
    AdjustmentProposal,
    CloseMemo,
    ClosePeriodInput,
    CollectPeriodInput,
    ComplianceInput,
    ComplianceReview,
    GrantInput,
    GrantOutcome,
    LoadHireInput,
    MemoInput,
    NewHire,
    PeriodData,
    PostEntryInput,
    PostEntryOutcome,
    ProposeAdjustmentsInput,
    ReconcileInput,
    Reconciliation,
    ReverseEntryInput,
    ReviseAdjustmentsInput,
    RevokeInput,
    RevokeOutcome,
)


@dataclass(frozen=True)
class Action:
    activity: str
    input: type[BaseModel]
    output: Any  # a pydantic model, or a plain type for simple results
    sensitive: bool = False
    description: str = ""
    #: a governed extension action: its argument model (what ``with:`` holds), its result model
    #: (``output.result``), its policy and its undo activity; an agent: its answer model
    args: type[BaseModel] | None = None
    result: type[BaseModel] | None = None
    policy: str | None = None
    undo: str | None = None
    extension: str | None = None  # the extension that registered it (None: Baton)

    @property
    def governed(self) -> bool:
        """Run as a governed step: policy decides inside the action's own transaction."""
        return self.policy is not None and self.args is not None

    @property
    def arguments(self) -> type[BaseModel]:
        """The model ``with:`` is checked against."""
        return self.args if self.governed and self.args is not None else self.input


AGENTS: dict[str, Action] = {
    "reconciler.propose_adjustments": Action(
        "propose_adjustments",
        ProposeAdjustmentsInput,
        AdjustmentProposal,
        description="reconciler agent (LLM): adjusting entries for unmatched lines",
    ),
    "reconciler.revise_adjustments": Action(
        "revise_adjustments",
        ReviseAdjustmentsInput,
        AdjustmentProposal,
        description="reconciler agent (LLM): revise entries as a reviewer asked",
    ),
    "compliance.review": Action(
        "review_compliance",
        ComplianceInput,
        ComplianceReview,
        description="compliance checker (LLM): entries + policy verdicts",
    ),
    "memo.write": Action(
        "write_close_memo", MemoInput, CloseMemo, description="summary generator (LLM)"
    ),
}

CONNECTORS: dict[str, Action] = {
    "finance.collect_period_data": Action(
        "collect_period_data", CollectPeriodInput, PeriodData, description="ledger + bank"
    ),
    "finance.reconcile_transactions": Action(
        "reconcile_transactions", ReconcileInput, Reconciliation, description="matching"
    ),
    "finance.post_journal_entry": Action(
        "post_journal_entry",
        PostEntryInput,
        PostEntryOutcome,
        sensitive=True,
        description="post one adjusting entry if policy allows it now",
    ),
    "finance.reverse_journal_entry": Action(
        "reverse_journal_entry", ReverseEntryInput, str | None, description="reverse a posting"
    ),
    "finance.close_period": Action(
        "close_period",
        ClosePeriodInput,
        str,
        sensitive=True,
        description="close (or, with reopen: true, reopen) a period",
    ),
    "hr.load_new_hire": Action("load_new_hire", LoadHireInput, NewHire),
    "hr.grant_entitlement": Action(
        "grant_entitlement", GrantInput, GrantOutcome, sensitive=True, description="grant access"
    ),
    "hr.revoke_entitlement": Action("revoke_entitlement", RevokeInput, RevokeOutcome),
}


#: What Baton itself ships (an extension may not take these names).
BUILTIN_AGENTS: frozenset[str] = frozenset(AGENTS)
BUILTIN_CONNECTORS: frozenset[str] = frozenset(CONNECTORS)
#: The built-in policy path of each sensitive built-in action (for `baton catalog`).
BUILTIN_POLICIES: dict[str, str] = {
    "finance.post_journal_entry": "baton/finance/posting",
    "hr.grant_entitlement": "baton/hr/entitlements",
}


def register(kind: str, name: str, action: Action) -> None:
    """Add an extension's agent (``kind`` "agent") or connector action to the catalogue."""
    table = AGENTS if kind == "agent" else CONNECTORS
    table[name] = action


def output_schema(action: Action) -> dict[str, Any]:
    """The JSON Schema of an action's output (for type checks of references to it)."""
    from pydantic import TypeAdapter

    return TypeAdapter(action.output).json_schema()


__all__ = [
    "AGENTS",
    "Action",
    "BUILTIN_AGENTS",
    "BUILTIN_CONNECTORS",
    "BUILTIN_POLICIES",
    "CONNECTORS",
    "output_schema",
    "register",
]
