"""Customer-support escalation (issue 5): one workflow per case (its queue: support_coordinator).

1. an SLA timer per priority runs beside the case (a breach is audited, ``BatonRisk``);
2. policy preflight on the ticket update (policy/support/ticket_update.rego): require_approval
   (a high-value customer, a sensitive category) escalates: strong models and a human;
3. triage on the cheapest adequate model (the router); an uncertain triage escalates too;
4. the L2 researcher acts (the default for new cases; ``l2_agent=False``: one routed answer):
   it looks the customer and contract up, searches the knowledge layer, may propose a credit (a
   support lead approves above 100 USD; withdrawn if the case fails) and drafts the reply, each
   a governed tool call (workflows/agent_loop.py);
5. the summarizer and the ticketing integrator (routed), then the ticket update: policy in its
   own transaction, a support lead when it asks. A refused model budget asks a lead too.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows.agent_loop import act_as_agent
from workflows.agent_steps import L2_RESEARCHER
from workflows.contracts import BusinessClaim, PolicyDecision, digest
from workflows.contracts.support import (
    SLA_SECONDS,
    SUPPORT_PROCESS,
    SUPPORT_STATUS_QUERY,
    Research,
    ResearchInput,
    SummaryInput,
    SupportCase,
    SupportCaseInput,
    SupportCaseResult,
    TicketDraftInput,
    TicketUpdateInput,
    TicketUpdateOutcome,
    Tier,
    TriageInput,
)
from workflows.governed import ApprovalRound, GovernedStep, fail_if_denied, held_round, step_summary
from workflows.process_base import GovernedProcess
from workflows.support_coordinator import SupportCoordinatorWorkflow, case_workflow_id

with workflow.unsafe.imports_passed_through():
    from activities.support import TICKET_POLICY, SupportActivities, ticket_policy_input

__all__ = [
    "BUDGET_POLICY",
    "L2_AGENT_DEFAULT_PATCH",
    "L2_AGENT_PATCH",
    "MAX_BUDGET_RAISES",
    "UNCERTAIN_BELOW",
    "SupportCaseWorkflow",
    "SupportCoordinatorWorkflow",
    "case_workflow_id",
]

BUDGET_POLICY = "baton/support/budget"
#: Triage below this confidence (after the router's own escalation) goes to a human.
UNCERTAIN_BELOW = 0.7
#: Replay safety: cases started before the L2 researcher could act (l2_agent) never asked.
L2_AGENT_PATCH = "support-l2-researcher-acts"
#: Replay safety: cases started before the researcher acted by default got one routed answer.
L2_AGENT_DEFAULT_PATCH = "support-l2-researcher-acts-by-default"
#: Budget raises one case may ask for before it fails safe.
MAX_BUDGET_RAISES = 2


@workflow.defn(name="SupportCase")
class SupportCaseWorkflow(GovernedProcess):
    budget_policy = BUDGET_POLICY
    budget_refused_event = "support.budget_refused"
    max_budget_raises = MAX_BUDGET_RAISES
    budget_raise_patch = None  # support cases always asked a lead
    budget_rounds_listed = True

    @workflow.init
    def __init__(self, inp: SupportCaseInput) -> None:
        self.govern(inp, SUPPORT_PROCESS)
        self.updated = False
        self.tool_calls: dict[str, int] = {}
        self.tool_refusals: dict[str, int] = {}

    def business_claim(self, inp: SupportCaseInput, process: str) -> BusinessClaim:
        """The case (its workflow id); released when the case run completes, so a case that
        is reopened may be escalated again, but never by two runs at once."""
        return BusinessClaim(process=process, key=case_workflow_id(inp.case))

    def named_by(self) -> tuple[str, str, str]:
        return self.inp.case.tenant, "case_id", self.inp.case.case_id

    @workflow.run
    async def run(self, inp: SupportCaseInput) -> SupportCaseResult:
        case = inp.case
        self.begin(
            "support.case_opened",
            {"case_id": case.case_id, "priority": case.priority, "tenant": case.tenant},
            tenant=case.tenant,
        )
        return await self.within_sla(
            self._undoing_on_failure(
                self._handle(case),
                event="support.case",
                what="case",
                failed_event="support.case_failed",
            ),
            inp.sla_seconds or SLA_SECONDS[case.priority],
            lambda: self.updated,
            event="support.sla_breached",
            detail={"case_id": case.case_id, "priority": case.priority},
        )

    async def _handle(self, case: SupportCase) -> SupportCaseResult:
        self.stage = "policy preflight"
        probe = TicketUpdateInput.probe(case, self.inp.requested_by)
        [preflight] = await self.preflight(
            TICKET_POLICY,
            {case.case_id: ticket_policy_input(probe)},
            f"policy {TICKET_POLICY}: preflight of {case.case_id}",
        )
        fail_if_denied([preflight], prefix="policy denied updating ticket ")
        reasons = list(preflight.reasons) if preflight.verdict == "require_approval" else []
        if case.priority == "P1":
            reasons.append("priority P1")
        tier: Tier = "strong" if reasons else "tier0"

        self.stage = "triage"
        about = {"tenant": case.tenant, "case_id": case.case_id}
        triage = await self.routed(
            "triage",
            SupportActivities.triage_ticket,
            TriageInput(**about, min_tier=tier, subject=case.subject, body=case.body),
            f"triage classifier (router, from {tier}): {case.case_id}",
        )
        if triage.confidence < UNCERTAIN_BELOW:
            reasons.append(f"uncertain triage ({triage.confidence:.2f})")
        about_case = {"case_id": case.case_id, "category": triage.category}
        escalated = self.escalate(reasons, "support.escalated", about_case)
        work: dict[str, Any] = {**about, "min_tier": "strong" if escalated else "tier0"}
        texts = {"category": triage.category, "subject": case.subject, "body": case.body}

        self.stage = "L2 research"
        if self._researcher_acts():
            research = await self._research_by_agent(case, triage.category, work["min_tier"])
        else:
            research = await self.routed(
                "research",
                SupportActivities.research_case,
                ResearchInput(**work, **texts),
                f"L2 researcher (router): {case.case_id}",
            )
        self.stage = "summarizing"
        summary = await self.routed(
            "summarize",
            SupportActivities.summarize_case,
            SummaryInput(**work, **texts, research=research.answer),
            f"case summarizer (router): {case.case_id}",
        )
        draft = await self.routed(
            "ticket_update",
            SupportActivities.draft_ticket_update,
            TicketDraftInput(
                **work, category=triage.category, summary=summary.summary, research=research.answer
            ),
            f"ticketing integrator (router): {case.case_id}",
        )

        self.stage = "updating ticket"
        update = TicketUpdateInput(
            case=case,
            category=triage.category,
            **draft.model_dump(include={"status", "reply", "tags"}),
            requested_by=self.inp.requested_by,
            idempotency_key="",
        )
        outcome: TicketUpdateOutcome = await self.act_approved(
            lambda grant: self._apply(update.model_copy(update={"approval": grant})),
            lambda held: self._ask_lead(update, held),
        )
        self.updated = True
        facts = {"category": triage.category, "status": draft.status, "escalated": escalated}
        facts |= {"ticket_version": outcome.ticket_version, "sla_breached": self.sla_breached}
        facts |= {"tokens": self.cost.tokens, "cost_usd": self.cost.cost_usd}
        await self.finish(
            "support.case_updated",
            {"case_id": case.case_id, **facts, "tiers": self.tiers, "tool_calls": self.tool_calls},
        )
        return SupportCaseResult(
            case_id=case.case_id,
            **facts,
            model_tiers=self.tiers,
            approvals=self.approvals,
            tool_calls=self.tool_calls,
            tool_refusals=self.tool_refusals,
        )

    def _researcher_acts(self) -> bool:
        """Whether the L2 researcher acts: asked for, or (unset) the default of this code."""
        if self.inp.l2_agent is None:
            return workflow.patched(L2_AGENT_DEFAULT_PATCH)
        return self.inp.l2_agent and workflow.patched(L2_AGENT_PATCH)

    async def _research_by_agent(self, case: SupportCase, category: str, tier: str) -> Research:
        """The L2 researcher acts: each lookup, search, credit and draft is a governed tool call
        (policy, approvals, audit, compensation); its answer cites what its searches returned."""
        task = {"case_id": case.case_id, "customer": case.customer, "category": category}
        answer, loop = await act_as_agent(
            self,
            L2_RESEARCHER,
            {**task, "subject": case.subject, "question": case.body},
            tenant=case.tenant,
            min_tier=tier,
        )
        self.tiers["research"] = f"agent:{loop.turns} turns"
        self.tool_calls, self.tool_refusals = loop.history.calls, loop.history.denied
        return Research(
            answer=answer["answer"], cited=answer["cited"], passages=[], usage=loop.usage(tier)
        )

    def _apply(self, update: TicketUpdateInput) -> GovernedStep[TicketUpdateOutcome]:
        key = f"{workflow.info().workflow_id}/ticket/{digest(update)[:16]}"
        return GovernedStep(
            what=f"updating ticket {update.case.case_id}",
            activity=SupportActivities.apply_ticket_update,
            arg=update.model_copy(update={"idempotency_key": key}),
            summary=step_summary(
                f"ticketing: update {update.case.case_id}", TICKET_POLICY, update.approval
            ),
            key=key,
            subject=update.case.case_id,
            grant=update.approval,
        )

    def _ask_lead(self, update: TicketUpdateInput, held: PolicyDecision) -> ApprovalRound:
        return held_round(
            held,
            action="update_ticket",
            payload=update,
            summary=f"update ticket {update.case.case_id} ({update.category}, {update.status})",
            action_payload={
                "tool": "apply_ticket_update",
                "arguments": update.model_dump(mode="json", exclude={"idempotency_key"}),
            },
            waiting="waiting for a support lead (update_ticket)",
            restore_stage=True,
        )

    @workflow.query(name=SUPPORT_STATUS_QUERY)
    def case_status(self) -> dict[str, Any]:
        return self.brief_status()
