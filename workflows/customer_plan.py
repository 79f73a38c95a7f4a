"""Customer onboarding's plan as data: who the customer is (from the relation store), what its
agents are given, which actions the specialists' answers ask to commit, what policy decides them
on and what they are committed with, the approval request for the plan's exceptions and the
executor's task. Pure functions of their inputs: no activity, no workflow API, so
workflows/customer_onboarding.py reads as its business steps and these rules are unit-testable
without Temporal.
"""

from __future__ import annotations

from typing import Any

from workflows import errors
from workflows.contracts import ApprovalGrant, PolicyDecision
from workflows.contracts.customer import (
    CommitInput,
    CommitOutcome,
    CommittedAction,
    CustomerAction,
    CustomerAgentInput,
    CustomerBrief,
    CustomerDossier,
    CustomerOnboardingInput,
    DiscountAssessment,
    IntroEmail,
    OnboardingPlan,
    OnboardingSequence,
)
from workflows.contracts.knowledge import RelationResult
from workflows.governed import ApprovalRound

__all__ = [
    "agent_input",
    "brief_of",
    "commit_input",
    "committed_action",
    "exceptions_round",
    "executor_task",
    "plan_kinds",
    "planned_actions",
    "policy_facts",
]


def agent_input(tenant: str, dossier: CustomerDossier) -> CustomerAgentInput:
    """What every customer agent is given: the customer and the texts retrieved about them."""
    return CustomerAgentInput(
        tenant=tenant,
        customer=dossier.customer,
        notes=[f"{h.title}: {h.text}" for h in dossier.notes],
        policies=[f"{h.title}: {h.text}" for h in dossier.policies],
    )


def plan_kinds(plan: OnboardingPlan) -> list[str]:
    """The plan's step kinds, in order; fails ``PlanInvalid`` unless it holds one intro_email
    step and no step twice."""
    kinds: list[str] = [s.kind for s in plan.steps]
    if len(set(kinds)) != len(kinds) or "intro_email" not in kinds:
        raise errors.failure(
            errors.PLAN_INVALID,
            f"the plan must hold one intro_email step and no step twice, got {kinds}",
        )
    return kinds


def policy_facts(inp: CustomerOnboardingInput, brief: CustomerBrief) -> dict[str, Any]:
    """What policy decides a customer action on: the same for the plan check and a commit."""
    return {
        "tenant": inp.tenant,
        "customer": brief,
        "hosting_region": inp.hosting_region,
        "sanctions_screened": inp.sanctions_screened,
        "dpa_signed": inp.dpa_signed,
        "requested_by": inp.requested_by,
    }


def planned_actions(
    brief: CustomerBrief, contact: str, by_kind: dict[str, Any]
) -> list[CustomerAction]:
    """The actions the specialists' answers (by plan step kind) ask to commit, in order: the
    discount (when one is recommended), the intro email, then the onboarding tasks."""
    actions: list[CustomerAction] = []
    assessment: DiscountAssessment | None = by_kind.get("discount_check")
    if assessment is not None and assessment.recommended_pct > 0:
        actions.append(
            CustomerAction(
                kind="discount",
                key="discount",
                summary=f"{assessment.recommended_pct:g}% discount on {brief.contract_id}",
                payload={
                    "contract_id": brief.contract_id,
                    "pct": assessment.recommended_pct,
                    "eligible": assessment.eligible,
                    "rationale": assessment.rationale,
                },
                discount_pct=assessment.recommended_pct,
            )
        )
    email: IntroEmail = by_kind["intro_email"]
    actions.append(
        CustomerAction(
            kind="intro_email",
            key="intro_email",
            summary=f"intro email to {brief.name}: {email.subject}",
            payload={
                "to": contact,
                "subject": email.subject,
                "body": email.body,
                "language": email.language,
            },
        )
    )
    sequence: OnboardingSequence | None = by_kind.get("onboarding_sequence")
    for i, task in enumerate(sequence.tasks if sequence else [], 1):
        actions.append(
            CustomerAction(
                kind="onboarding_task",
                key=f"task/{i}",
                summary=f"{task.name} (day {task.due_in_days}, {task.owner_role})",
                payload=task.model_dump(),
            )
        )
    return actions


def brief_of(tree: RelationResult) -> CustomerBrief:
    """The customer as the agents see it: the customer entity and its first contract."""
    attrs = tree.root.attributes
    contracts = tree.of_kind("contract")
    accounts = tree.of_kind("account")
    contract = contracts[0].attributes if contracts else {}
    return CustomerBrief(
        customer_id=tree.root.entity_id,
        name=tree.root.name,
        country=str(attrs.get("country", "")),
        region=str(attrs.get("region", "")),
        segment=str(attrs.get("segment", "")),
        language=str(attrs.get("language", "en")),
        contract_id=contracts[0].entity_id if contracts else "",
        plan=str(contract.get("plan", "")),
        annual_value_eur=int(contract.get("annual_value_eur", 0)),
        term_months=int(contract.get("term_months", 0)),
        requested_discount_pct=float(contract.get("requested_discount_pct", 0)),
        seats=sum(int(a.attributes.get("seats", 0)) for a in accounts),
    )


def executor_task(
    brief: CustomerBrief, actions: list[CustomerAction], plan_id: str, tools: dict[str, str]
) -> dict[str, Any]:
    """The onboarding executor's task: the recorded plan's actions and the tool (``tools``:
    by action kind) that carries out each."""
    return {
        "customer_id": brief.customer_id,
        "customer": brief.name,
        "plan_id": plan_id,
        "actions": [
            {"action_key": a.key, "kind": a.kind, "tool": tools[a.kind], "summary": a.summary}
            for a in actions
        ],
    }


def exceptions_round(
    brief: CustomerBrief, actions: list[CustomerAction], held: dict[str, PolicyDecision]
) -> ApprovalRound:
    """ONE approval request for the plan's exceptions (``held``: policy's decision on each
    action it held back, by action key), bound to those actions."""
    asked = [a for a in actions if a.key in held]
    return ApprovalRound.over(
        list(held.values()),
        action="customer_plan_exceptions",
        payload={"customer_id": brief.customer_id, "actions": [a.model_dump() for a in asked]},
        summary=f"{brief.name}: "
        + "; ".join(f"{a.summary} ({', '.join(held[a.key].reasons)})" for a in asked),
        action_payload={
            "customer_id": brief.customer_id,
            "actions": [a.model_dump(mode="json") for a in asked],
        },
        risk="medium",
        waiting="waiting for approval of plan exceptions",
    )


def commit_input(
    inp: CustomerOnboardingInput,
    brief: CustomerBrief,
    rationale: str,
    action: CustomerAction,
    approval: ApprovalGrant | None,
    key: str,
) -> CommitInput:
    """One action as it is committed: the policy facts, the planner's rationale, the approval
    it carries (None: it needs none) and its idempotency key."""
    return CommitInput(
        **policy_facts(inp, brief),
        action=action,
        rationale=rationale,
        approval=approval,
        idempotency_key=key,
    )


def committed_action(
    action: CustomerAction, outcome: CommitOutcome | None, approval: ApprovalGrant | None
) -> CommittedAction:
    """What committing ``action`` (with ``approval``, None: it needed none) committed; fails
    ``PolicyDenied`` when policy did not let it through (``outcome`` None: it wants a human)."""
    if outcome is None or outcome.commit_id is None:  # the plan check let it through
        raise errors.failure(
            errors.POLICY_DENIED,
            f"policy did not allow committing {action.key} without an approval",
        )
    done = action.model_dump(include={"kind", "key", "summary"})
    by = approval.approvers if approval else []
    return CommittedAction(**done, commit_id=outcome.commit_id, approved_by=by)
