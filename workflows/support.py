"""Customer-support escalation (issue 5): one workflow per case (the queue that starts them is
workflows/support_coordinator.py, re-exported here).

``SupportCase``, read top to bottom:

1. SLA: a timer per priority runs beside the case; if it fires before the ticket is updated the
   breach is audited and the run is marked (search attribute ``BatonRisk=sla_breached``);
2. policy preflight on the ticket update (policy/support/ticket_update.rego): require_approval
   (a high-value customer, a sensitive category) escalates the case: strong models and a human;
3. triage on the cheapest adequate model (the router: tier-0 rules, cheap, strong); an
   uncertain triage escalates the case too;
4. the L2 researcher answers from the knowledge layer; the case summarizer writes the summary;
   the ticketing integrator drafts the update (all routed; escalated cases at the strong tier);
5. the ticket update is the sensitive action: policy decides in the same transaction as the
   write (idempotent per key); require_approval goes to a support lead (the approval gate).

Every routed call returns the run's charged tokens and cost, which the run carries as search
attributes (``BatonTokens``, ``BatonCostUsd``). A call the budget refuses goes to a support lead
(the approval gate); approved, the run's budget is lifted and the step runs again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

from workflows import visibility
from workflows.agent_loop import AgentLoop
from workflows.agent_steps import L2_RESEARCHER
from workflows.contracts import BusinessClaim, digest
from workflows.contracts.support import (
    SLA_SECONDS,
    SUPPORT_PROCESS,
    SUPPORT_STATUS_QUERY,
    Research,
    ResearchInput,
    RoutedUsage,
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
from workflows.contracts.tools import ToolPrincipal
from workflows.governed import ApprovalRound, GovernedStep, fail_if_denied, grant
from workflows.process_base import GovernedProcess
from workflows.support_coordinator import SupportCoordinatorWorkflow, case_workflow_id

with workflow.unsafe.imports_passed_through():
    from activities.support import TICKET_POLICY, SupportActivities, ticket_policy_input

__all__ = [
    "BUDGET_POLICY",
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
        self.tiers: dict[str, str] = {}
        self.updated = False
        self.sla_breached = False

    def business_claim(self, inp: SupportCaseInput, process: str) -> BusinessClaim:
        """The case (its workflow id); released when the case run completes, so a case that
        is reopened may be escalated again, but never by two runs at once."""
        return BusinessClaim(process=process, key=case_workflow_id(inp.case))

    @workflow.run
    async def run(self, inp: SupportCaseInput) -> SupportCaseResult:
        case = inp.case
        self.begin(
            "support.case_opened",
            {"case_id": case.case_id, "priority": case.priority, "tenant": case.tenant},
            tenant=case.tenant,
        )
        sla = inp.sla_seconds or SLA_SECONDS[case.priority]
        watcher = asyncio.ensure_future(self._watch_sla(sla))
        try:
            return await self._undoing_on_failure(
                self._handle(case),
                event="support.case",
                what="case",
                failed_event="support.case_failed",
            )
        finally:
            watcher.cancel()

    async def _handle(self, case: SupportCase) -> SupportCaseResult:
        sup = SupportActivities
        self.stage = "policy preflight"
        [preflight] = await self.preflight(
            TICKET_POLICY,
            {case.case_id: ticket_policy_input(self._probe(case))},
            f"policy {TICKET_POLICY}: preflight of {case.case_id}",
        )
        fail_if_denied([preflight], prefix="policy denied updating ticket ")
        reasons = list(preflight.reasons) if preflight.verdict == "require_approval" else []
        if case.priority == "P1":
            reasons.append("priority P1")
        tier: Tier = "strong" if reasons else "tier0"

        self.stage = "triage"
        about = {"tenant": case.tenant, "case_id": case.case_id}
        triage = await self._routed(
            "triage",
            sup.triage_ticket,
            TriageInput(**about, min_tier=tier, subject=case.subject, body=case.body),
            f"triage classifier (router, from {tier}): {case.case_id}",
        )
        if triage.confidence < UNCERTAIN_BELOW:
            reasons.append(f"uncertain triage ({triage.confidence:.2f})")
            tier = "strong"
        escalated = bool(reasons)
        if escalated:
            if not self.sla_breached:  # a breach stays the visible risk
                workflow.upsert_search_attributes([visibility.RISK.value_set("escalated")])
            self.audit.record(
                "baton:workflow",
                "support.escalated",
                detail={"case_id": case.case_id, "reasons": reasons, "category": triage.category},
            )
        work: dict[str, Any] = {**about, "min_tier": "strong" if escalated else "tier0"}

        self.stage = "L2 research"
        if self.inp.l2_agent and workflow.patched(L2_AGENT_PATCH):
            research = await self._research_by_agent(case, triage.category, work["min_tier"])
        else:
            research = await self._routed(
                "research",
                sup.research_case,
                ResearchInput(
                    **work, category=triage.category, subject=case.subject, body=case.body
                ),
                f"L2 researcher (router): {case.case_id}",
            )
        self.stage = "summarizing"
        summary = await self._routed(
            "summarize",
            sup.summarize_case,
            SummaryInput(
                **work,
                category=triage.category,
                subject=case.subject,
                body=case.body,
                research=research.answer,
            ),
            f"case summarizer (router): {case.case_id}",
        )
        draft = await self._routed(
            "ticket_update",
            sup.draft_ticket_update,
            TicketDraftInput(
                **work,
                category=triage.category,
                summary=summary.summary,
                research=research.answer,
            ),
            f"ticketing integrator (router): {case.case_id}",
        )

        self.stage = "updating ticket"
        update = TicketUpdateInput(
            case=case,
            category=triage.category,
            status=draft.status,
            reply=draft.reply,
            tags=draft.tags,
            requested_by=self.inp.requested_by,
            idempotency_key="",
        )
        outcome = await self._apply(update)
        if outcome is None:  # policy wants a support lead first
            decision = self.held[case.case_id]
            approval = await self.approve(
                ApprovalRound(
                    action="update_ticket",
                    payload=update,
                    summary=f"update ticket {case.case_id} ({triage.category}, {draft.status}): "
                    f"{'; '.join(decision.reasons)}",
                    obligations=decision.obligations,
                    policy_reasons=decision.reasons,
                    action_payload={
                        "tool": "apply_ticket_update",
                        "arguments": update.model_dump(mode="json", exclude={"idempotency_key"}),
                    },
                    waiting="waiting for a support lead (update_ticket)",
                    restore_stage=True,
                )
            )
            outcome = await self._apply(update.model_copy(update={"approval": grant(approval)}))
        assert outcome is not None  # act() fails a step still held after an approval
        self.updated = True
        await self.finish(
            "support.case_updated",
            {
                "case_id": case.case_id,
                "category": triage.category,
                "status": draft.status,
                "ticket_version": outcome.ticket_version,
                "escalated": escalated,
                "tiers": self.tiers,
                "tokens": self.cost.tokens,
                "cost_usd": self.cost.cost_usd,
                "sla_breached": self.sla_breached,
            },
        )
        return SupportCaseResult(
            case_id=case.case_id,
            category=triage.category,
            escalated=escalated,
            model_tiers=self.tiers,
            status=draft.status,
            ticket_version=outcome.ticket_version,
            sla_breached=self.sla_breached,
            approvals=self.approvals,
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
        )

    async def _research_by_agent(self, case: SupportCase, category: str, tier: str) -> Research:
        """The L2 researcher as an agent that acts: its knowledge searches are governed tool
        calls (tool policy, audit, payload store), its answer must cite what they returned."""
        loop = AgentLoop(
            self,
            L2_RESEARCHER,
            ToolPrincipal(
                process=SUPPORT_PROCESS,
                tenant=case.tenant,
                agent=L2_RESEARCHER.name,
                requested_by=self.inp.requested_by,
            ),
            None,
        )
        task = {
            "case_id": case.case_id,
            "category": category,
            "subject": case.subject,
            "question": case.body,
        }
        answer = await loop.run(task, self._budget or self.inp.budget, min_tier=tier)
        assert answer is not None  # the step never continues as new (continue_after_events)
        self.tiers["research"] = f"agent:{loop.turns} turns"
        usage = RoutedUsage(
            task_class=L2_RESEARCHER.task_class,
            model="agent",
            tier="strong" if tier == "strong" else "cheap",
            tokens=loop.tokens,
            cost_usd=loop.cost_usd,
        )
        return Research(answer=answer["answer"], cited=answer["cited"], passages=[], usage=usage)

    # -- routed steps, the sensitive step --------------------------------------------------------

    async def _routed(self, name: str, activity: Any, arg: Any, summary: str) -> Any:
        """A routed agent step (the base runs it with the run's budget and asks a support lead
        when the budget refuses it); which tier and model answered goes to the result."""
        out = await self._step("agent", activity, arg, summary)
        self.tiers[name] = f"{out.usage.tier}:{out.usage.model}"
        return out

    async def _apply(self, update: TicketUpdateInput) -> TicketUpdateOutcome | None:
        key = f"{workflow.info().workflow_id}/ticket/{digest(update)[:16]}"
        return await self.act(
            GovernedStep(
                what=f"updating ticket {update.case.case_id}",
                activity=SupportActivities.apply_ticket_update,
                arg=update.model_copy(update={"idempotency_key": key}),
                summary=f"ticketing: update {update.case.case_id} (policy {TICKET_POLICY}"
                f"{', approved' if update.approval else ''})",
                key=key,
                subject=update.case.case_id,
                grant=update.approval,
            )
        )

    def _probe(self, case: SupportCase) -> TicketUpdateInput:
        """The ticket update as policy sees it before anything is drafted."""
        return TicketUpdateInput(
            case=case,
            category="",
            status="open",
            reply="x",
            requested_by=self.inp.requested_by,
            idempotency_key="preflight",
        )

    # -- the budget: a support lead decides (policy/support/budget.rego) ---------------------------

    def _budget_facts(self) -> dict[str, Any]:
        case = self.inp.case
        return {"tenant": case.tenant, "case_id": case.case_id, "subject": case.case_id}

    def _budget_payload(self, step: str) -> dict[str, Any]:
        budget = self._budget or self.inp.budget
        return {"case_id": self.inp.case.case_id, "step": step, "budget": budget.run_usd}

    def _budget_subject(self) -> str:
        return f"case {self.inp.case.case_id}"

    async def _watch_sla(self, seconds: float) -> None:
        try:
            await workflow.wait_condition(lambda: self.updated, timeout=seconds)
        except TimeoutError:
            self.sla_breached = True
            workflow.upsert_search_attributes([visibility.RISK.value_set("sla_breached")])
            self.audit.record(
                "baton:workflow",
                "support.sla_breached",
                detail={
                    "case_id": self.inp.case.case_id,
                    "priority": self.inp.case.priority,
                    "sla_seconds": seconds,
                    "stage": self.stage,
                },
            )
            await self.audit.flush()

    @workflow.query(name=SUPPORT_STATUS_QUERY)
    def case_status(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "tiers": self.tiers,
            "tokens": self.cost.tokens,
            "cost_usd": self.cost.cost_usd,
            "sla_breached": self.sla_breached,
            "pending": [r.request_id for r in self.gate.pending()],
        }
