"""Customer-support escalation (issue 5): a queue coordinator and one workflow per case.

``SupportCoordinator`` (long-running, one per tenant) takes cases by Update (or Signal) into a
durable priority queue (P1 first, then arrival), runs at most ``max_parallel`` cases at a time as
child workflows, and continues as new after ``continue_after`` cases (or when Temporal suggests
it), carrying the queue and the ids it has seen, so its history stays bounded.

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
import heapq
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate, new_request
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    ApprovalGrant,
    ApprovalOutcome,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    digest,
)
from workflows.contracts_support import (
    BUDGET_EXCEEDED,
    ENQUEUE_CASE_SIGNAL,
    ENQUEUE_CASE_UPDATE,
    SLA_SECONDS,
    SUPPORT_PROCESS,
    SUPPORT_STATUS_QUERY,
    Budget,
    CoordinatorStatus,
    EnqueueAck,
    QueuedCase,
    ResearchInput,
    RoutedUsage,
    SummaryInput,
    SupportCase,
    SupportCaseInput,
    SupportCaseResult,
    SupportCoordinatorInput,
    TicketDraftInput,
    TicketUpdateInput,
    Tier,
    TriageInput,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.presets import ActivityKind
from workflows.process_base import ApprovalHandlers, RunCost, set_search_attributes

with workflow.unsafe.imports_passed_through():
    from activities.finance import FinanceActivities
    from activities.support import TICKET_POLICY, SupportActivities, ticket_policy_input

R = TypeVar("R")

BUDGET_POLICY = "baton/support/budget"
#: Triage below this confidence (after the router's own escalation) goes to a human.
UNCERTAIN_BELOW = 0.7
#: Budget raises one case may ask for before it fails safe.
MAX_BUDGET_RAISES = 2


@workflow.defn(name="SupportCase")
class SupportCaseWorkflow(ApprovalHandlers):
    @workflow.init
    def __init__(self, inp: SupportCaseInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.gate = ApprovalGate(SUPPORT_PROCESS, self.audit)
        self.kill_switch = KillSwitchGate(self.audit)
        self.budget = inp.budget
        self.cost = RunCost()  # the run's model tokens and cost, in its search attributes
        self.tiers: dict[str, str] = {}
        self.updated = False
        self.sla_breached = False
        self.approvals: list[ApprovalOutcome] = []

    @workflow.run
    async def run(self, inp: SupportCaseInput) -> SupportCaseResult:
        case = inp.case
        set_search_attributes(
            [
                visibility.PROCESS.value_set(SUPPORT_PROCESS),
                visibility.TENANT.value_set(case.tenant),
                visibility.APPROVAL_STATE.value_set("none"),
                visibility.RISK.value_set("low"),
                visibility.COST_USD.value_set(0.0),
                visibility.TOKENS.value_set(0),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "support.case_opened",
            detail={"case_id": case.case_id, "priority": case.priority, "tenant": case.tenant},
        )
        sla = inp.sla_seconds or SLA_SECONDS[case.priority]
        watcher = asyncio.ensure_future(self._watch_sla(sla))
        try:
            return await self._handle(case)
        except (Exception, asyncio.CancelledError) as err:
            self.gate.withdraw(f"the case failed: {err}")
            self.audit.record("baton:workflow", "support.case_failed", detail={"error": str(err)})
            await asyncio.shield(asyncio.ensure_future(self.audit.flush()))
            raise
        finally:
            watcher.cancel()

    async def _handle(self, case: SupportCase) -> SupportCaseResult:
        sup = SupportActivities
        self.stage = "policy preflight"
        [preflight] = await self._step(
            "policy",
            FinanceActivities.evaluate_policies,
            PolicyBatch(queries=[self._ticket_query(case, "", "open", "x")]),
            f"policy {TICKET_POLICY}: preflight of {case.case_id}",
        )
        if preflight.verdict == "deny":
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy denied updating ticket {case.case_id}: {'; '.join(preflight.reasons)}",
                decision_id=preflight.decision_id,
            )
        reasons = list(preflight.reasons) if preflight.verdict == "require_approval" else []
        if case.priority == "P1":
            reasons.append("priority P1")
        tier: Tier = "strong" if reasons else "tier0"

        self.stage = "triage"
        triage = await self._routed(
            "triage",
            sup.triage_ticket,
            lambda: TriageInput(
                tenant=case.tenant,
                budget=self.budget,
                min_tier=tier,
                case_id=case.case_id,
                subject=case.subject,
                body=case.body,
            ),
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
        work_tier: Tier = "strong" if escalated else "tier0"

        self.stage = "L2 research"
        research = await self._routed(
            "research",
            sup.research_case,
            lambda: ResearchInput(
                tenant=case.tenant,
                budget=self.budget,
                min_tier=work_tier,
                case_id=case.case_id,
                category=triage.category,
                subject=case.subject,
                body=case.body,
            ),
            f"L2 researcher (router): {case.case_id}",
        )
        self.stage = "summarizing"
        summary = await self._routed(
            "summarize",
            sup.summarize_case,
            lambda: SummaryInput(
                tenant=case.tenant,
                budget=self.budget,
                min_tier=work_tier,
                case_id=case.case_id,
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
            lambda: TicketDraftInput(
                tenant=case.tenant,
                budget=self.budget,
                min_tier=work_tier,
                case_id=case.case_id,
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
        if outcome.decision.verdict == "require_approval":
            approval = await self._ask_lead(
                "update_ticket",
                outcome.decision,
                digest(update.model_copy(update={"idempotency_key": ""})),
                f"update ticket {case.case_id} ({triage.category}, {draft.status}): "
                f"{'; '.join(outcome.decision.reasons)}",
                payload={
                    "tool": "apply_ticket_update",
                    "arguments": update.model_dump(mode="json", exclude={"idempotency_key"}),
                },
            )
            grant = ApprovalGrant(
                request_id=approval.request.request_id,
                approvers=approval.approvers,
                action_digest=approval.request.action_digest,
                escalation_level=approval.request.escalation_level,
            )
            outcome = await self._apply(update.model_copy(update={"approval": grant}))
        if outcome.decision.verdict != "allow":
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy denied updating ticket {case.case_id}: "
                f"{'; '.join(outcome.decision.reasons)}",
                decision_id=outcome.decision.decision_id,
            )
        self.updated = True
        self.stage = "done"
        self.audit.record(
            "baton:workflow",
            "support.case_updated",
            detail={
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
        await self.audit.flush()
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

    # -- routed steps, budgets -------------------------------------------------------------

    async def _routed(
        self,
        name: str,
        activity: Callable[[Any, Any], Awaitable[R]],
        build: Callable[[], Any],
        summary: str,
    ) -> R:
        """Run a routed agent step; a budget refusal goes to a support lead, then runs again."""
        raises = 0
        while True:
            try:
                out = await self._step("agent", activity, build(), summary)
            except ActivityError as err:
                cause = err.cause
                if not isinstance(cause, ApplicationError) or cause.type != BUDGET_EXCEEDED:
                    raise
                if raises >= MAX_BUDGET_RAISES:
                    raise errors.failure(BUDGET_EXCEEDED, str(cause)) from err
                raises += 1
                await self._raise_budget(name, str(cause.message))
                continue
            usage: RoutedUsage = out.usage  # type: ignore[attr-defined]
            self.tiers[name] = f"{usage.tier}:{usage.model}"
            self.cost.charged(usage.run_tokens, usage.run_cost_usd)
            return out

    async def _raise_budget(self, step: str, why: str) -> None:
        case = self.inp.case
        self.audit.record(
            "baton:workflow", "support.budget_refused", detail={"step": step}, rationale=why
        )
        [decision] = await self._step(
            "policy",
            FinanceActivities.evaluate_policies,
            PolicyBatch(
                queries=[
                    PolicyQuery(
                        policy=BUDGET_POLICY,
                        input={
                            "action": "raise_model_budget",
                            "tenant": case.tenant,
                            "case_id": case.case_id,
                            "requested_by": self.inp.requested_by,
                            "budget_usd": self.budget.run_usd,
                        },
                        subject=case.case_id,
                        workflow_id=workflow.info().workflow_id,
                    )
                ]
            ),
            f"policy {BUDGET_POLICY}: who may raise the budget",
        )
        if decision.verdict != "require_approval":
            raise errors.failure(BUDGET_EXCEEDED, f"{why}; and policy: {decision.reasons}")
        await self._ask_lead(
            "raise_model_budget",
            decision,
            digest({"case_id": case.case_id, "step": step, "budget": self.budget.run_usd}),
            f"raise the model budget of case {case.case_id} ({step}): {why}",
            payload={"case_id": case.case_id, "step": step, "budget_usd": self.budget.run_usd},
        )
        # Approved: this run's own cap is lifted (the tenant's daily cap still holds).
        self.budget = Budget(run_usd=None, over_budget=self.budget.over_budget)

    # -- the sensitive step and the humans ---------------------------------------------------

    def _ticket_query(
        self, case: SupportCase, category: str, status: str, reply: str
    ) -> PolicyQuery:
        probe = TicketUpdateInput(
            case=case,
            category=category,
            status=status,  # type: ignore[arg-type]
            reply=reply,
            requested_by=self.inp.requested_by,
            idempotency_key="preflight",
        )
        return PolicyQuery(
            policy=TICKET_POLICY,
            input=ticket_policy_input(probe),
            subject=case.case_id,
            workflow_id=workflow.info().workflow_id,
        )

    async def _apply(self, update: TicketUpdateInput) -> Any:
        key = f"{workflow.info().workflow_id}/ticket/{digest(update)[:16]}"
        return await self._step(
            "connector",
            SupportActivities.apply_ticket_update,
            update.model_copy(update={"idempotency_key": key}),
            f"ticketing: update {update.case.case_id} (policy {TICKET_POLICY}"
            f"{', approved' if update.approval else ''})",
        )

    async def _ask_lead(
        self,
        action: str,
        decision: PolicyDecision,
        action_digest: str,
        summary: str,
        payload: Any = None,
    ) -> ApprovalOutcome:
        request = new_request(
            process=SUPPORT_PROCESS,
            action=action,
            action_digest=action_digest,
            summary=summary,
            obligations=decision.obligations,
            requested_by=self.inp.requested_by,
            excluded=[self.inp.requested_by],
            policy_reasons=list(decision.reasons),
            action_payload=payload,
        )
        previous = self.stage
        self.stage = f"waiting for a support lead ({action})"
        outcome = await self.gate.request(
            request, timedelta(seconds=self.inp.approval_timeout_seconds)
        )
        self.approvals.append(outcome)
        self.stage = previous
        if outcome.outcome == "expired":
            raise errors.failure(
                errors.APPROVAL_EXPIRED, f"approval {request.request_id} expired: {summary}"
            )
        if outcome.outcome != "approved":
            raise errors.failure(
                errors.APPROVAL_REJECTED,
                f"{outcome.decided_by} {outcome.outcome} {request.request_id}: {outcome.rationale}",
            )
        return outcome

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

    async def _step(
        self,
        kind: ActivityKind,
        activity: Callable[[Any, Any], Awaitable[R]],
        arg: Any,
        summary: str,
    ) -> R:
        return await self.kill_switch.step(kind, activity, arg, summary)

    # -- handlers ----------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# The coordinator
# ---------------------------------------------------------------------------------------------

PRIORITY_RANK = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
#: Case ids a coordinator carries across continue-as-new to refuse duplicates (bounded input).
SEEN_KEPT = 5000


def case_workflow_id(case: SupportCase) -> str:
    return f"support-{case.tenant}-{case.case_id}"


@workflow.defn(name="SupportCoordinator")
class SupportCoordinatorWorkflow:
    @workflow.init
    def __init__(self, inp: SupportCoordinatorInput) -> None:
        self.inp = inp
        self.heap: list[tuple[int, int, str]] = []
        self.cases: dict[str, QueuedCase] = {}
        for q in inp.queue:
            self._push(q)
        self.seen: dict[str, None] = dict.fromkeys(
            [*inp.seen, *(q.case.case_id for q in inp.queue)]
        )
        self.next_seq = max([q.seq for q in inp.queue], default=0) + 1
        self.running: set[str] = set()
        self.done: dict[str, str] = dict(inp.done)
        self.handled = inp.handled
        self.started_here = 0

    def _push(self, q: QueuedCase) -> None:
        self.cases[q.case.case_id] = q
        heapq.heappush(self.heap, (PRIORITY_RANK[q.case.priority], q.seq, q.case.case_id))

    @workflow.run
    async def run(self, inp: SupportCoordinatorInput) -> None:
        workflow.upsert_search_attributes(
            [
                visibility.PROCESS.value_set("support_coordinator"),
                visibility.TENANT.value_set(inp.tenant),
            ]
        )
        while True:
            await workflow.wait_condition(
                lambda: (
                    (bool(self.heap) and len(self.running) < inp.max_parallel)
                    or self._time_to_continue()
                )
            )
            if self._time_to_continue():
                await workflow.wait_condition(
                    lambda: not self.running and workflow.all_handlers_finished()
                )
                queue = [self.cases[cid] for _, _, cid in sorted(self.heap)]
                workflow.continue_as_new(
                    inp.model_copy(
                        update={
                            "queue": queue,
                            "handled": self.handled,
                            # the latest ids, and the queued ones (carried with the queue)
                            "seen": list(self.seen)[-SEEN_KEPT:],
                            # the last results only: the input stays small
                            "done": dict(list(self.done.items())[-100:]),
                            "runs": inp.runs + 1,
                        }
                    )
                )
            _, _, case_id = heapq.heappop(self.heap)
            queued = self.cases.pop(case_id)
            self.running.add(case_id)
            self.started_here += 1
            asyncio.ensure_future(self._run_case(queued.case))

    def _time_to_continue(self) -> bool:
        return self.started_here >= self.inp.continue_after or (
            workflow.info().is_continue_as_new_suggested()
        )

    async def _run_case(self, case: SupportCase) -> None:
        try:
            result = await workflow.execute_child_workflow(
                SupportCaseWorkflow.run,
                SupportCaseInput(
                    case=case,
                    requested_by=self.inp.requested_by,
                    budget=self.inp.budget,
                    sla_seconds=self.inp.sla_seconds.get(case.priority),
                    approval_timeout_seconds=self.inp.approval_timeout_seconds,
                ),
                id=case_workflow_id(case),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
            self.done[case.case_id] = f"updated ({result.status}, {result.category})"
        except Exception as err:  # the case failed (denied, rejected ...): record, go on
            self.done[case.case_id] = f"failed: {err.cause if hasattr(err, 'cause') else err}"
        finally:
            self.running.discard(case.case_id)
            self.handled += 1

    @workflow.update(name=ENQUEUE_CASE_UPDATE)
    def enqueue_case(self, case: SupportCase) -> EnqueueAck:
        return self._enqueue(case)

    def _enqueue(self, case: SupportCase) -> EnqueueAck:
        self.seen[case.case_id] = None
        q = QueuedCase(case=case, enqueued_at=workflow.now(), seq=self.next_seq)
        self.next_seq += 1
        self._push(q)
        position = sorted(self.heap).index((PRIORITY_RANK[case.priority], q.seq, case.case_id))
        return EnqueueAck(
            case_id=case.case_id,
            accepted=True,
            position=position + 1,
            workflow_id=case_workflow_id(case),
        )

    @workflow.signal(name=ENQUEUE_CASE_SIGNAL)
    def enqueue_case_signal(self, case: SupportCase) -> None:
        """The same as the Update, for `temporal workflow signal` and the Web UI; a case the
        Update would refuse is dropped (the sender hears nothing: prefer the Update)."""
        try:
            self._validate_case(case)
        except ValueError as err:
            workflow.logger.warning("enqueue_case signal refused: %s", err)
            return
        self._enqueue(case)

    @enqueue_case.validator
    def _validate_case(self, case: SupportCase) -> None:
        if case.tenant != self.inp.tenant:
            raise ValueError(
                f"case {case.case_id} is for tenant {case.tenant!r}; this queue serves "
                f"{self.inp.tenant!r}"
            )
        if case.case_id in self.seen:
            raise ValueError(f"case {case.case_id} was already enqueued (case ids are unique)")

    @workflow.query(name=SUPPORT_STATUS_QUERY)
    def status(self) -> CoordinatorStatus:
        return CoordinatorStatus(
            queued=[cid for _, _, cid in sorted(self.heap)],
            running=sorted(self.running),
            done=self.done,
            handled=self.handled,
            runs=self.inp.runs,
        )
