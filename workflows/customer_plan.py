"""Customer onboarding's plan as data: who the customer is (from the relation store) and which
actions the specialists' answers ask to commit. Pure functions of their inputs: no activity, no
workflow API, so workflows/customer_onboarding.py reads as its business steps and these rules are
unit-testable without Temporal.
"""

from __future__ import annotations

from typing import Any

from workflows.contracts.customer import (
    CustomerAction,
    CustomerBrief,
    DiscountAssessment,
    IntroEmail,
    OnboardingSequence,
)
from workflows.contracts.knowledge import RelationResult

__all__ = ["brief_of", "planned_actions"]


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
