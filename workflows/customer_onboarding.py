"""Customer onboarding, the brief's end-to-end blueprint: a new high-value customer in the CRM.

1. trigger: a CRM event "new high-value customer" starts this run (baton/crm_trigger.py), the
   business key ``customer-onboarding/<tenant>/<customer>`` as workflow id, so a re-delivered
   event never starts a second run;
2. context fetch: the relation store (customer -> accounts -> contracts) and the knowledge layer
   (CRM notes about the customer, the company policies that apply), with provenance: every
   retrieval is an audit row naming its sources;
3. plan: the planner agent answers a multi-step plan as structured data (intro email, discount
   eligibility check when a discount was requested, onboarding sequence);
4. execute: a specialist agent per step (email writer, discount analyst, sequencer), in parallel;
5. policy check: every final action goes through policy/customer/onboarding.rego (data
   residency, legal constraints, discount limits) before anything is committed; a deny stops
   the run with nothing committed;
6. human approval: plan exceptions (a discount above the self-approval limit) go to ONE approval
   request (the approval gate) for the role policy names;
7. commit & log: each action is committed to the systems of record (policy asked again inside
   the write transaction, the approval attached), its revert registered first (saga); the
   planner's rationale, the sources and the plan go to the audit trail.

A deny, a rejection, an expired approval, a failure or a cancellation reverts everything
committed so far, audits why, and fails the run with a typed error.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate, merge_obligations, new_request, reasons_of
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    STATUS_QUERY,
    ApprovalGrant,
    ApprovalOutcome,
    PolicyDecision,
    digest,
)
from workflows.contracts_customer import (
    CommitInput,
    CommittedAction,
    CustomerAction,
    CustomerAgentInput,
    CustomerBrief,
    CustomerDossier,
    CustomerOnboardingInput,
    CustomerOnboardingResult,
    CustomerOnboardingStatus,
    DiscountAssessment,
    IntroEmail,
    OnboardingSequence,
    PlanCheckInput,
    RevertInput,
)
from workflows.contracts_knowledge import (
    KnowledgeHit,
    KnowledgeQuery,
    KnowledgeResult,
    RelationQuery,
    RelationResult,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.process_base import GovernedProcess, RunCost, set_search_attributes
from workflows.saga import Saga

with workflow.unsafe.imports_passed_through():
    from activities.customer import CUSTOMER_POLICY, CustomerActivities
    from activities.customer_agents import CustomerAgentActivities
    from activities.knowledge import KnowledgeActivities

R = TypeVar("R")

PROCESS = "customer_onboarding"
PLAN_INVALID = "PlanInvalid"
NOTES_PER_DOSSIER = 5
POLICIES_PER_DOSSIER = 4
POLICY_QUESTION = (
    "discount approval limits, data residency for customer data, onboarding emails and consent"
)


@workflow.defn(name="CustomerOnboarding")
class CustomerOnboardingWorkflow(GovernedProcess):
    @workflow.init
    def __init__(self, inp: CustomerOnboardingInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.gate = ApprovalGate(PROCESS, self.audit)
        self.kill_switch = KillSwitchGate(self.audit)
        self.saga = Saga()
        self.committed: list[CommittedAction] = []
        self.cost = RunCost()  # the run's model tokens and cost, in its search attributes

    @workflow.run
    async def run(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        set_search_attributes(
            [
                visibility.PROCESS.value_set(PROCESS),
                visibility.TENANT.value_set(inp.tenant),
                visibility.APPROVAL_STATE.value_set("none"),
                visibility.RISK.value_set("low"),
                visibility.COST_USD.value_set(0.0),
                visibility.TOKENS.value_set(0),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "customer_onboarding.started",
            detail={
                "tenant": inp.tenant,
                "customer_id": inp.customer_id,
                "event_id": inp.event_id,
                "hosting_region": inp.hosting_region,
            },
        )
        return await self._undoing_on_failure(
            self._onboard(inp), event="customer_onboarding", what="onboarding"
        )

    async def _onboard(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        self.stage = "fetching context"
        dossier = await self._dossier(inp)
        brief = dossier.customer
        agent_input = CustomerAgentInput(
            tenant=inp.tenant,
            customer=brief,
            notes=[f"{h.title}: {h.text}" for h in dossier.notes],
            policies=[f"{h.title}: {h.text}" for h in dossier.policies],
        )

        self.stage = "planning"
        agents = CustomerAgentActivities
        plan = await self._step(
            "agent",
            agents.plan_customer_onboarding,
            agent_input,
            f"customer_planner (LLM): plan the onboarding of {brief.name}",
        )
        self.cost.add(plan.usage)
        kinds = [s.kind for s in plan.steps]
        if len(set(kinds)) != len(kinds) or "intro_email" not in kinds:
            raise errors.failure(
                PLAN_INVALID,
                f"the plan must hold one intro_email step and no step twice, got {kinds}",
            )
        self.audit.record(
            "agent:customer_planner",
            "customer_onboarding.planned",
            detail={
                "steps": [s.model_dump() for s in plan.steps],
                "sources": dossier.sources(),
            },
            rationale=plan.rationale,
        )

        self.stage = "specialists working"
        outputs = await asyncio.gather(
            *(self._specialist(step.kind, step.instructions, agent_input) for step in plan.steps)
        )
        by_kind = dict(zip(kinds, outputs, strict=True))
        actions = self._actions(brief, dossier.contact, by_kind)

        self.stage = "policy check"
        check = await self._step(
            "policy",
            CustomerActivities.check_customer_plan,
            PlanCheckInput(
                tenant=inp.tenant,
                customer=brief,
                hosting_region=inp.hosting_region,
                sanctions_screened=inp.sanctions_screened,
                dpa_signed=inp.dpa_signed,
                requested_by=inp.requested_by,
                actions=actions,
            ),
            f"policy {CUSTOMER_POLICY}: {len(actions)} planned actions",
        )
        denied = [d for d in check.decisions if d.verdict == "deny"]
        if denied:
            raise errors.failure(
                errors.POLICY_DENIED,
                "; ".join(f"{d.subject}: {', '.join(d.reasons)}" for d in denied),
                decision_id=denied[0].decision_id,
            )
        exceptions = [
            (a, d)
            for a, d in zip(actions, check.decisions, strict=True)
            if d.verdict == "require_approval"
        ]
        approvals: list[ApprovalOutcome] = []
        grant: ApprovalGrant | None = None
        if exceptions:
            outcome = await self._ask_approval(brief, exceptions)
            approvals.append(outcome)
            request = outcome.request
            if outcome.outcome == "expired":
                raise errors.failure(
                    errors.APPROVAL_EXPIRED,
                    f"approval request {request.request_id} expired ({outcome.rationale})",
                )
            if outcome.outcome != "approved":
                raise errors.failure(
                    errors.APPROVAL_REJECTED,
                    f"{outcome.decided_by} {outcome.outcome} {request.request_id}: "
                    f"{outcome.rationale}",
                )
            grant = ApprovalGrant(
                request_id=request.request_id,
                approvers=outcome.approvers,
                action_digest=request.action_digest,
                escalation_level=request.escalation_level,
            )

        self.stage = "committing"
        needs_approval = {a.key for a, _ in exceptions}
        for action in actions:
            await self._commit(
                brief, action, plan.rationale, grant if action.key in needs_approval else None
            )
        if inp.fail_after_commits:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after committing (fail_after_commits)"
            )

        self.stage = "done"
        self.audit.record(
            "baton:workflow",
            "customer_onboarding.completed",
            detail={
                "committed": [c.model_dump() for c in self.committed],
                "sources": dossier.sources(),
                "plan": kinds,
                "tokens": self.cost.tokens,
                "cost_usd": self.cost.cost_usd,
            },
            rationale=plan.rationale,
        )
        await self.audit.flush()
        return CustomerOnboardingResult(
            tenant=inp.tenant,
            customer_id=inp.customer_id,
            plan=plan,
            committed=self.committed,
            approvals=approvals,
            sources=dossier.sources(),
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
        )

    # -- context --------------------------------------------------------------------------

    async def _dossier(self, inp: CustomerOnboardingInput) -> CustomerDossier:
        knowledge = KnowledgeActivities
        tree: RelationResult = await self._step(
            "connector",
            knowledge.knowledge_relations,
            RelationQuery(
                tenant=inp.tenant, entity_id=inp.customer_id, requested_by="customer_onboarding"
            ),
            f"relation store: {inp.customer_id} -> accounts -> contracts",
        )
        if tree.root.kind != "customer":
            raise errors.failure(
                PLAN_INVALID, f"{inp.customer_id} is a {tree.root.kind}, not a customer"
            )
        notes, policies = await asyncio.gather(
            self._search(
                KnowledgeQuery(
                    tenant=inp.tenant,
                    query=f"{tree.root.name}: requirements, stakeholders, language, concerns",
                    k=NOTES_PER_DOSSIER,
                    entity_id=inp.customer_id,
                    requested_by="customer_onboarding",
                ),
                f"knowledge: notes about {inp.customer_id}",
            ),
            self._search(
                KnowledgeQuery(
                    tenant=inp.tenant,
                    query=POLICY_QUESTION,
                    k=POLICIES_PER_DOSSIER,
                    kinds=["policy", "product_doc"],
                    requested_by="customer_onboarding",
                ),
                "knowledge: policies and playbook",
            ),
        )
        return CustomerDossier(
            customer=_brief(tree),
            contact=str(tree.root.attributes.get("contact", "")),
            notes=notes,
            policies=policies,
        )

    async def _search(self, query: KnowledgeQuery, summary: str) -> list[KnowledgeHit]:
        result: KnowledgeResult = await self._step(
            "connector", KnowledgeActivities.knowledge_search, query, summary
        )
        return result.hits

    # -- specialists ----------------------------------------------------------------------

    async def _specialist(self, kind: str, instructions: str, base: CustomerAgentInput) -> Any:
        agents = CustomerAgentActivities
        inp = base.model_copy(update={"instructions": instructions})
        output: IntroEmail | DiscountAssessment | OnboardingSequence
        if kind == "intro_email":
            output = await self._step(
                "agent", agents.write_intro_email, inp, "intro_email_writer (LLM)"
            )
        elif kind == "discount_check":
            output = await self._step(
                "agent", agents.assess_discount, inp, "discount_analyst (LLM)"
            )
        else:
            output = await self._step(
                "agent", agents.plan_onboarding_sequence, inp, "onboarding_sequencer (LLM)"
            )
        self.cost.add(output.usage)
        return output

    def _actions(
        self, brief: CustomerBrief, contact: str, by_kind: dict[str, Any]
    ) -> list[CustomerAction]:
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

    # -- approval and commit ---------------------------------------------------------------

    async def _ask_approval(
        self, brief: CustomerBrief, exceptions: list[tuple[CustomerAction, PolicyDecision]]
    ) -> ApprovalOutcome:
        obligations = merge_obligations([d.obligations for _, d in exceptions])
        request = new_request(
            process=PROCESS,
            action="customer_plan_exceptions",
            action_digest=digest(
                {
                    "customer_id": brief.customer_id,
                    "actions": [a.model_dump() for a, _ in exceptions],
                }
            ),
            summary=f"{brief.name}: "
            + "; ".join(f"{a.summary} ({', '.join(d.reasons)})" for a, d in exceptions),
            obligations=obligations,
            requested_by=self.inp.requested_by,
            excluded=[self.inp.requested_by],
            policy_reasons=reasons_of([d for _, d in exceptions]),
            action_payload={
                "customer_id": brief.customer_id,
                "actions": [a.model_dump(mode="json") for a, _ in exceptions],
            },
        )
        workflow.upsert_search_attributes([visibility.RISK.value_set("medium")])
        self.stage = "waiting for approval of plan exceptions"
        outcome = await self.gate.request(
            request, timedelta(seconds=self.inp.approval_timeout_seconds)
        )
        self.stage = f"approval {outcome.outcome}"
        return outcome

    async def _commit(
        self,
        brief: CustomerBrief,
        action: CustomerAction,
        rationale: str,
        approval: ApprovalGrant | None,
    ) -> None:
        key = f"{workflow.info().workflow_id}/commit/{action.key}/{digest(approval)[:12]}"
        self.saga.add(
            f"revert {action.key}",
            lambda: self._step(
                "compensation",
                CustomerActivities.revert_customer_action,
                RevertInput(
                    original_key=key,
                    reason=f"onboarding of {brief.customer_id} undone",
                    idempotency_key=f"{key}/revert",
                ),
                f"compensation: revert {action.key}",
            ),
        )
        outcome = await self._step(
            "connector",
            CustomerActivities.commit_customer_action,
            CommitInput(
                tenant=self.inp.tenant,
                customer=brief,
                hosting_region=self.inp.hosting_region,
                sanctions_screened=self.inp.sanctions_screened,
                dpa_signed=self.inp.dpa_signed,
                requested_by=self.inp.requested_by,
                action=action,
                rationale=rationale,
                approval=approval,
                idempotency_key=key,
            ),
            f"commit {action.key} (policy {CUSTOMER_POLICY}{', approved' if approval else ''})",
        )
        if outcome.decision.verdict != "allow" or outcome.commit_id is None:
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy did not allow committing {action.key}: "
                f"{outcome.decision.verdict}: {'; '.join(outcome.decision.reasons)}",
                decision_id=outcome.decision.decision_id,
            )
        self.committed.append(
            CommittedAction(
                kind=action.kind,
                key=action.key,
                commit_id=outcome.commit_id,
                summary=action.summary,
                approved_by=approval.approvers if approval else [],
            )
        )

    # -- approvals, kill switch, queries ----------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CustomerOnboardingStatus:
        return CustomerOnboardingStatus(
            workflow_id=workflow.info().workflow_id,
            process=PROCESS,
            stage=self.stage,
            approval_state=self.gate.state,
            pending=self.gate.pending(),
            committed=self.committed,
            compensated=self.saga.compensated,
        )


def _brief(tree: RelationResult) -> CustomerBrief:
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
