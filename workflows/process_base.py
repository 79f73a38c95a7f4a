"""What every governed process workflow shares: the approval handlers (Update with validator,
and the same decision by Signal), the kill-switch release signal, the pending-approvals query,
the governed step and approval round (workflows/governed.py), the step runner with the run's
model budget and its raise, the failure path, and the run's cost. A process calls
``self.govern(inp, PROCESS)`` in its ``__init__`` and inherits these; the handler names are the
ones a stock `temporal` CLI user types (workflows/contracts/). This module holds no process's
business steps.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate
from workflows.blackboard import Blackboard, cooperate_audited
from workflows.contracts import (
    APPROVAL_COMMENT_UPDATE,
    APPROVAL_DELEGATE_UPDATE,
    APPROVAL_SIGNAL,
    APPROVAL_UPDATE,
    BOARD_HISTORY_QUERY,
    BUDGET_EXCEEDED,
    KILL_SWITCH_RELEASED_SIGNAL,
    PENDING_APPROVALS_QUERY,
    STATUS_QUERY,
    AdjustingEntry,
    AgentInput,
    ApprovalAck,
    ApprovalComment,
    ApprovalDecision,
    ApprovalDelegationInput,
    ApprovalGrant,
    ApprovalRequest,
    BoardEntry,
    BoardProposal,
    BoardSlot,
    BoardWrite,
    Budget,
    CloseException,
    PersistBoardInput,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    PostedEntry,
    ProcessStatus,
    TokenUsage,
)
from workflows.contracts.knowledge import (
    KnowledgeHit,
    KnowledgeQuery,
    RelationQuery,
    RelationResult,
)
from workflows.governed import ApprovalRound, Governance, claim_refusal, risk_of
from workflows.held_exceptions import (
    exceptions_details,
    exceptions_policy_input,
    exceptions_total,
    hold_denied,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.presets import PRESETS, ActivityKind, ActivityMethod
from workflows.saga import unwind

with workflow.unsafe.imports_passed_through():
    from activities.claims import ClaimActivities
    from activities.knowledge import KnowledgeActivities
    from activities.policy_gate import PolicyGateActivities

R = TypeVar("R")
S = TypeVar("S", bound=BaseModel)

#: Replay safety: runs started before this upserted every search attribute they set, changed
#: or not (a history event and a visibility write each time).
CHANGED_ONLY_PATCH = "search-attributes-changed-only"


def set_search_attributes(updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
    """Upsert the search attributes among ``updates`` whose value differs from the run's current
    one. A value the starter already set (``BatonClient`` sets process, tenant, approval state,
    risk, cost and tokens at start), or an earlier upsert set, costs no history event and no
    visibility write again: a close whose agents cost nothing writes none of its own until it
    waits for someone (only the patch's own ``TemporalChangeVersion``, once).
    """
    current = workflow.info().typed_search_attributes
    changed = [u for u in updates if current.get(u.key) != u.value]
    if len(changed) == len(updates) or workflow.patched(CHANGED_ONLY_PATCH):
        if changed:
            workflow.upsert_search_attributes(changed)
    else:  # a run started before the patch upserted all of them
        workflow.upsert_search_attributes(list(updates))


class RunCost:
    """What a run's model calls cost so far, mirrored into its ``BatonTokens`` and
    ``BatonCostUsd`` search attributes.

    A routed call (activities/router.py) reports the run's totals as the database charged them:
    every request of every attempt, a failed attempt's too, so the run's figures match the
    charges exactly. A call that is not routed adds what its answer cost."""

    def __init__(self) -> None:
        self._routed_tokens = 0
        self._routed_cost = 0.0
        self._direct_tokens = 0
        self._direct_cost = 0.0

    @property
    def tokens(self) -> int:
        return self._routed_tokens + self._direct_tokens

    @property
    def cost_usd(self) -> float:
        return round(self._routed_cost + self._direct_cost, 8)

    def add(self, usage: TokenUsage) -> None:
        if usage.run_tokens is not None and usage.run_cost_usd is not None:
            self.charged(usage.run_tokens, usage.run_cost_usd)
            return
        self._direct_tokens += usage.total_tokens
        self._direct_cost = round(self._direct_cost + usage.cost_usd, 8)
        self._publish()

    def facts(self) -> dict[str, Any]:
        """The run's tokens and cost so far, for an audit event's detail."""
        return {"tokens": self.tokens, "cost_usd": self.cost_usd}

    def charged(self, run_tokens: int, run_cost_usd: float) -> None:
        """The run's routed totals as the database charged them (RoutedUsage.run_*)."""
        # parallel calls finish in any order: the largest total read is the latest
        self._routed_tokens = max(self._routed_tokens, run_tokens)
        self._routed_cost = max(self._routed_cost, run_cost_usd)
        self._publish()

    def _publish(self) -> None:
        set_search_attributes(
            [
                visibility.COST_USD.value_set(self.cost_usd),
                visibility.TOKENS.value_set(self.tokens),
            ]
        )


#: The policy asked when an approver delegates a request (policy/base/delegation.rego).
DELEGATION_POLICY = "baton/base/delegation"
#: The policy asked when a run's model budget is spent (policy/base/budget_raise.rego).
BUDGET_RAISE_POLICY = "baton/base/budget_raise"
#: Replay safety: runs started before a refused budget asked a human failed instead.
BUDGET_RAISE_PATCH = "budget-refusal-asks-a-human"


class ApprovalHandlers:
    """The handlers every approval-gated workflow declares, by the names a stock `temporal` CLI
    user types: the approval Update (with its validator) and Signal, the kill-switch release
    signal and the pending-approvals query. The workflow sets ``self.gate`` and
    ``self.kill_switch`` in its ``__init__``."""

    gate: ApprovalGate
    kill_switch: KillSwitchGate

    @workflow.update(name=APPROVAL_UPDATE)
    async def decide_approval(self, decision: ApprovalDecision) -> ApprovalAck:
        return self.gate.accept(decision, via="update")

    @decide_approval.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        self.gate.validate(decision)

    @workflow.signal(name=APPROVAL_SIGNAL)
    def submit_approval(self, raw: RawValue) -> None:
        """The decision by Signal. It takes the raw payload and validates it here, so a payload
        that is not a decision is an audited refusal rather than a worker log line."""
        try:
            payload = workflow.payload_converter().from_payload(raw.payload)
        except Exception as err:  # not JSON at all: still a decision attempt, still audited
            self.gate.refuse_malformed(None, f"payload could not be decoded: {err}"[:500])
            return
        self.gate.receive_raw_signal(payload)

    @workflow.update(name=APPROVAL_COMMENT_UPDATE)
    async def comment_approval(self, comment: ApprovalComment) -> ApprovalAck:
        """A comment on a pending request (the approver inbox), visible to its approvers and
        audited. New Updates add no command to runs that never receive them, so histories
        recorded before they existed replay unchanged."""
        return await self.gate.comment(comment)

    @comment_approval.validator
    def _validate_comment(self, comment: ApprovalComment) -> None:
        self.gate.validate_comment(comment)

    @workflow.update(name=APPROVAL_DELEGATE_UPDATE)
    async def delegate_approval(self, inp: ApprovalDelegationInput) -> ApprovalAck:
        """Hand a pending request to a colleague: the validator checks the delegator, policy
        (baton/base/delegation) decides whether the delegate may receive it; a refusal fails
        the Update with policy's reasons and is audited."""
        wid = workflow.info().workflow_id
        tenant = str(getattr(getattr(self, "inp", None), "tenant", "") or "")
        preset = PRESETS["policy"]
        [decision] = await workflow.execute_activity_method(
            PolicyGateActivities.evaluate_policies,
            PolicyBatch(
                queries=[
                    PolicyQuery(
                        policy=DELEGATION_POLICY,
                        input=self.gate.delegation_query(inp, tenant),
                        subject=inp.request_id,
                        workflow_id=wid,
                    )
                ]
            ),
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
            summary=f"policy {DELEGATION_POLICY}: may {inp.delegate} receive {inp.request_id}",
        )
        return await self.gate.delegate(inp, decision)

    @delegate_approval.validator
    def _validate_delegation(self, inp: ApprovalDelegationInput) -> None:
        self.gate.validate_delegation(inp)

    @workflow.signal(name=KILL_SWITCH_RELEASED_SIGNAL)
    def kill_switch_released(self) -> None:
        """Sent by `baton kill clear`: look again now instead of at the next poll."""
        self.kill_switch.release()

    @workflow.query(name=PENDING_APPROVALS_QUERY)
    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.gate.pending()


class GovernedProcess(Governance, ApprovalHandlers):
    """The one base of every governed process: the approval handlers, the governed step and
    approval round (workflows/governed.py), the run's budget and its raise, and the failure
    path that withdraws, compensates and audits. A process calls :meth:`govern` in its
    ``__init__`` and writes its ``run`` as business steps."""

    inp: Any  # the process's start input: tenant, requested_by, approval_timeout_seconds, budget
    cost: RunCost
    exceptions: list[CloseException]  # entries policy denied, held (:meth:`hold_exceptions`)
    posted: list[PostedEntry]  # entries the run posted (:meth:`record_posted`)
    #: The run's model budget as it stands (None: the input's, until a human raised it).
    _budget: Budget | None = None
    #: A raise being asked for (parallel refused steps wait for it instead of asking again),
    #: and how the last one ended when nobody raised it.
    _raising_budget: bool = False
    _budget_refusal: str | None = None
    #: Who may raise the run's budget, the audit event of a refusal, how many raises one step
    #: may ask for (None: until refused), and the patch older runs ran without.
    policy_activity = staticmethod(PolicyGateActivities.evaluate_policies)
    claim_check_activity = staticmethod(ClaimActivities.check_business_key)
    claim_settle_activity = staticmethod(ClaimActivities.settle_business_key)
    budget_policy = BUDGET_RAISE_POLICY
    budget_refused_event = "budget.refused"
    max_budget_raises: int | None = None
    budget_raise_patch: str | None = BUDGET_RAISE_PATCH
    #: whether a budget round is listed in the run's approvals (its result)
    budget_rounds_listed = False
    #: set when the run's SLA passed before it was done (:meth:`within_sla`)
    sla_breached = False

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> ProcessStatus:
        """Where the run stands (a process with its own status model overrides this). The
        annotation is the query's result type for clients: keep it a model."""
        return self.status_as(
            ProcessStatus,
            posted=getattr(self, "posted", []),
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
            held_by=self.kill_switch.held_by,
            exceptions=getattr(self, "exceptions", []),
        )

    def status_as(self, model: type[S], **fields: Any) -> S:
        """The run's status as a process's own model (its status query): what every run has
        (id, process, stage, approvals, compensations), and the process's ``fields``."""
        return model(
            workflow_id=workflow.info().workflow_id,
            process=getattr(self, "name", self.gate.process),  # a YAML process: its name
            stage=self.stage,
            approval_state=self.gate.state,
            pending=self.gate.pending(),
            compensated=self.saga.compensated,
            **fields,
        )

    def result_as(self, model: type[S], **fields: Any) -> S:
        """The run's result as a process's own model: the process's ``fields``, the approval
        rounds the run went through and what its model calls cost."""
        return model(
            **fields, approvals=self.approvals, tokens=self.cost.tokens, cost_usd=self.cost.cost_usd
        )

    async def look_up(self, entity_id: str, summary: str) -> RelationResult:
        """An entity of the run's tenant and everything below it in the relation store
        (activities/knowledge.py), asked as the process: the retrieval's audit row names it."""
        query = RelationQuery(
            tenant=self.inp.tenant, entity_id=entity_id, requested_by=self.gate.process
        )
        return await self._step(
            "connector", KnowledgeActivities.knowledge_relations, query, summary
        )

    async def search(self, summary: str, **query: Any) -> list[KnowledgeHit]:
        """What the knowledge layer finds in the run's tenant's documents (``query``: the
        KnowledgeQuery's text, k, kinds, entity), asked as the process; the retrieval's audit
        row names its sources."""
        ask = KnowledgeQuery(tenant=self.inp.tenant, requested_by=self.gate.process, **query)
        found = await self._step("connector", KnowledgeActivities.knowledge_search, ask, summary)
        return found.hits

    def govern(self, inp: Any, process: str, **gates: Any) -> None:
        super().govern(inp, process, **gates)
        self.cost = RunCost()  # the run's model tokens and cost, in its search attributes
        self.tiers: dict[str, str] = {}  # which tier and model answered each routed step

    async def routed(self, name: str, activity: Any, arg: Any, summary: str) -> Any:
        """A routed agent step (run with the run's budget, whose refusal goes to the budget
        role: :meth:`_step`); which tier and model answered is kept in ``tiers[name]``."""
        out = await self._step("agent", activity, arg, summary)
        self.tiers[name] = f"{out.usage.tier}:{out.usage.model}"
        return out

    def begin(
        self,
        event: str,
        detail: dict[str, Any],
        *,
        tenant: str,
        shadow: bool | None = None,
        version: str | None = None,
    ) -> None:
        """The run's search attributes (changed ones only) and its first audit event."""
        attrs: list[SearchAttributeUpdate[Any]] = [
            visibility.PROCESS.value_set(self.gate.process),
            visibility.TENANT.value_set(tenant),
            visibility.APPROVAL_STATE.value_set("none"),
            visibility.RISK.value_set("low"),
            visibility.COST_USD.value_set(0.0),
            visibility.TOKENS.value_set(0),
        ]
        if shadow is not None:
            attrs.append(visibility.SHADOW.value_set(shadow))
        if version is not None:
            attrs.append(visibility.VERSION.value_set(version))
        set_search_attributes(attrs)
        self.audit.record(self.inp.requested_by, event, detail=detail)

    async def run_governed(
        self,
        body: Awaitable[R],
        started: str,
        detail: dict[str, Any],
        *,
        event: str,
        what: str,
        before_flush: Callable[[], Awaitable[Any]] | None = None,
        failed_event: str | None = None,
    ) -> R:
        """A process's whole run: :meth:`begin` (tenant, and shadow and version when the input
        has them, from the run's input), then ``body`` on the failure path
        (:meth:`_undoing_on_failure`)."""
        inp = self.inp
        self.begin(
            started,
            detail,
            tenant=inp.tenant,
            shadow=getattr(inp, "shadow", None),
            version=getattr(inp, "version", None),
        )
        return await self._undoing_on_failure(
            body, event=event, what=what, before_flush=before_flush, failed_event=failed_event
        )

    async def finish(self, event: str, detail: dict[str, Any], rationale: str = "") -> None:
        """The run is done: its last audit event, written before the result is returned; then
        its business-key claim is kept or released (``keeps_claim_on_completion``)."""
        self.stage = "done"
        self.audit.record("baton:workflow", event, detail=detail, rationale=rationale)
        await self.audit.flush()
        await self.settle_claim("completed")

    def record_posted(
        self,
        entry: AdjustingEntry,
        posting_id: str | None,
        approval: ApprovalGrant | None,
        amended_by: str | None,
    ) -> None:
        """Keep an entry the run posted (its status and result list it), with who approved
        and who amended it."""
        assert posting_id is not None
        if not hasattr(self, "posted"):
            self.posted = []
        self.posted.append(
            PostedEntry(
                entry_id=entry.entry_id,
                account=entry.account,
                amount=entry.amount,
                posting_id=posting_id,
                approved_by=approval.approvers if approval else [],
                amended_by=amended_by,
            )
        )

    # -- exceptions: entries policy denied are held, not acted on (workflows/held_exceptions.py)

    def hold_exceptions(
        self,
        entries: list[AdjustingEntry],
        denied: list[PolicyDecision],
        *,
        policy: str,
        event: str,
        run: str = "close",
    ) -> list[AdjustingEntry]:
        """Hold the ``denied`` entries as the run's exceptions (audited as ``event``, shown in
        the Web UI and the run's status): never acted on; the rest, returned, go on."""
        held, rest = hold_denied(entries, denied)
        if not hasattr(self, "exceptions"):
            self.exceptions = []
        self.exceptions.extend(held)
        self.audit.record(
            "baton:workflow",
            event,
            detail={
                "exceptions": [e.model_dump(mode="json") for e in self.exceptions],
                "total": str(exceptions_total(self.exceptions)),
            },
            rationale=f"{len(self.exceptions)} entries denied by policy {policy} are "
            f"held as exceptions and not posted; the rest of the {run} goes on",
        )
        workflow.set_current_details(exceptions_details(self.exceptions))
        return rest

    async def sign_off_exceptions(
        self,
        policy: str,
        *,
        subject: str,
        facts: dict[str, Any],
        what: str,
        asked: str,
        excluded: Sequence[str],
        action: str = "close_with_exceptions",
    ) -> None:
        """May the run ``what`` (e.g. "close 2026-10") with its open exceptions? ``policy``
        (asked with ``facts`` and the exceptions) allows it, asks for a sign-off (an approval
        round ``asked`` "... with N open exceptions totalling T"; a rejection fails safe), or
        denies (``PolicyDenied``, fail safe)."""
        held, total = self.exceptions, exceptions_total(self.exceptions)
        self.stage = "deciding on exceptions"
        workflow.set_current_details(exceptions_details(held))
        payload = [e.model_dump(mode="json") for e in held]
        await self.sign_off(
            policy,
            subject,
            exceptions_policy_input(held, **facts),
            f"policy {policy}: {what} with {len(held)} exceptions",
            lambda decision: ApprovalRound(
                action=action,
                payload=payload,
                summary=f"{asked} with {len(held)} open exceptions totalling {total} (not posted)",
                obligations=decision.obligations,
                policy_reasons=decision.reasons,
                excluded=sorted(set(excluded)),
                risk=risk_of,
                waiting="waiting for a sign-off of the exceptions",
                fail_safe="nothing stays posted",
                action_payload=payload,
                fields={"total_amount": total},
            ),
            refused=f"policy refuses to {what} with exceptions: ",
        )
        workflow.set_current_details(exceptions_details(held))

    async def within_sla(
        self,
        body: Awaitable[R],
        seconds: float,
        done: Callable[[], bool],
        *,
        event: str,
        detail: dict[str, Any],
    ) -> R:
        """Run ``body`` with an SLA timer beside it: when ``done()`` is not true within
        ``seconds``, the breach is marked (``sla_breached``, search attribute
        ``BatonRisk=sla_breached``) and audited as ``event`` (``detail`` plus the SLA and the
        stage the run was in); the body goes on either way."""
        watcher = asyncio.ensure_future(self._watch_sla(seconds, done, event, detail))
        try:
            return await body
        finally:
            watcher.cancel()

    async def _watch_sla(
        self, seconds: float, done: Callable[[], bool], event: str, detail: dict[str, Any]
    ) -> None:
        try:
            await workflow.wait_condition(done, timeout=seconds)
        except TimeoutError:
            self.sla_breached = True
            workflow.upsert_search_attributes([visibility.RISK.value_set("sla_breached")])
            self.audit.record(
                "baton:workflow",
                event,
                detail={**detail, "sla_seconds": seconds, "stage": self.stage},
            )
            await self.audit.flush()

    def escalate(
        self, reasons: list[str], event: str, detail: dict[str, Any], risk: str = "escalated"
    ) -> bool:
        """When there are ``reasons``, mark the run's risk (``BatonRisk``; an SLA breach stays
        the visible risk) and audit them (``event``); whether the run escalated."""
        if not reasons:
            return False
        if not self.sla_breached:
            workflow.upsert_search_attributes([visibility.RISK.value_set(risk)])
        self.audit.record("baton:workflow", event, detail={**detail, "reasons": reasons})
        return True

    async def _undoing_on_failure(
        self,
        body: Awaitable[R],
        *,
        event: str,
        what: str,
        before_flush: Callable[[], Awaitable[Any]] | None = None,
        failed_event: str | None = None,
    ) -> R:
        """Run the process's body. On failure, rejection, deny or cancellation (CancelledError is
        a BaseException), withdraw its pending approvals and run its compensations
        (saga.unwind), then re-raise. Not BaseException as a whole: an eviction from the
        worker's cache closes the coroutine with GeneratorExit, and that must not compensate.

        Before the body, a read-only look at the run's business key: another run owns it, the
        run fails with ``BusinessKeyClaimed`` before it works or asks anyone. After a failure
        whose compensations all ran, the run releases its claim (the key may run again); a
        compensation that failed leaves it claimed until a repair (``baton repair``)."""
        started = False
        try:
            await self.check_claim("at start")
            started = True
            return await body
        except (Exception, asyncio.CancelledError) as err:
            if not started and inspect.iscoroutine(body):
                body.close()  # refused before it began: never awaited
            self.stage = "compensating"
            await unwind(
                err,
                saga=self.saga,
                audit=self.audit,
                event=event,
                what=what,
                withdraw=self.gate.withdraw,
                before_flush=before_flush,
                failed_event=failed_event,
            )
            if not self.saga.failed and claim_refusal(err) is None:
                await asyncio.shield(asyncio.ensure_future(self.settle_claim("failed")))
            self.stage = "failed"
            raise

    async def _step(
        self, kind: ActivityKind, activity: ActivityMethod[R], arg: Any, summary: str
    ) -> R:
        """One activity with its kind's preset, holding for the kill switch / policy engine.

        An agent step carries the run's version and budget; when the router refuses a call for
        the run's cap (BudgetExceeded), a person holding the process's budget role decides
        (``budget_policy``): approved, the run's cap is lifted and the step runs again;
        rejected or expired, the run fails (and the process compensates what it did). A
        refusal for the tenant's daily cap fails the step: no approval in the run can lift it."""
        if kind == "connector":  # a side effect's input carries the run's business-key claim
            arg = self.claimed(arg)
        if kind != "agent":
            return await self.kill_switch.step(kind, activity, arg, summary)
        if isinstance(arg, AgentInput):
            answer = await self._budgeted(activity, arg, summary)
        else:
            answer = await self.kill_switch.step(kind, activity, arg, summary)
        usage = getattr(answer, "usage", None)
        if usage is not None:  # what the answer cost, in the run's search attributes
            self.cost.add(usage)
        return answer

    async def _budgeted(self, activity: ActivityMethod[R], arg: Any, summary: str) -> R:
        """An agent step with the run's budget, asking a human when the budget refuses it."""
        kind: ActivityKind = "agent"
        raises = 0
        while True:
            if self._budget is None:
                self._budget = self.inp.budget
            # the run's version picks the agent's prompt and model; its budget, what it may cost
            update: dict[str, Any] = {"budget": self._budget}
            if isinstance(getattr(self.inp, "version", None), str):
                update["version"] = self.inp.version
            budgeted = arg.model_copy(update=update)
            sent_with = self._budget
            try:
                return await self.kill_switch.step(kind, activity, budgeted, summary)
            except ActivityError as err:
                cause = err.cause
                refused = isinstance(cause, ApplicationError) and cause.type == BUDGET_EXCEEDED
                patch = self.budget_raise_patch
                if not refused or (patch is not None and not workflow.patched(patch)):
                    raise
                why = str(cause.message if isinstance(cause, ApplicationError) else err)
                if self.max_budget_raises is not None:  # a bounded number of raises per step
                    if raises >= self.max_budget_raises:
                        raise errors.failure(BUDGET_EXCEEDED, str(cause)) from err
                    raises += 1
                elif self._budget is not sent_with:  # raised while this step ran: run again
                    continue
                if self._raising_budget:  # a parallel step is asking already: its answer counts
                    await workflow.wait_condition(lambda: not self._raising_budget)
                    if self._budget_refusal is not None:
                        raise errors.failure(BUDGET_EXCEEDED, self._budget_refusal) from err
                    continue
                if self._budget.run_usd is None and self.max_budget_raises is None:
                    raise errors.failure(  # the tenant's day is spent: nothing to raise
                        BUDGET_EXCEEDED,
                        f"{why} (the tenant's daily cap, policy/data/tenants.json; this run has "
                        "no cap of its own to raise)",
                    ) from err
                self._raising_budget = True
                try:
                    await self._raise_budget(getattr(activity, "__name__", str(activity)), why)
                except ApplicationError as refusal:
                    self._budget_refusal = refusal.message
                    raise
                finally:
                    self._raising_budget = False

    def _budget_query(self, step: str) -> PolicyQuery:
        """What the budget policy is asked: the action, the run (``_budget_facts``), the step."""
        inp, wid = self.inp, workflow.info().workflow_id
        facts = self._budget_facts()
        return PolicyQuery(
            policy=self.budget_policy,
            input={
                "action": "raise_model_budget",
                "process": self.gate.process,
                **facts,
                "step": step,
                "requested_by": inp.requested_by,
                "budget_usd": (self._budget or inp.budget).run_usd,
            },
            subject=str(facts.get("subject", wid)),
            workflow_id=wid,
        )

    def named_by(self) -> tuple[str, str, str] | None:
        """How budget rounds name the run: ``(tenant, field, id)`` of its business object (a
        support case: ``("acme", "case_id", "C-1")``); None: the workflow id (``inp.tenant``)."""
        return None

    def _budget_facts(self) -> dict[str, Any]:
        """How the budget policy names the run (a process may name it its own way)."""
        named = self.named_by()
        if named is not None:
            tenant, field, key = named
            return {"tenant": tenant, field: key, "subject": key}
        return {"tenant": self.inp.tenant, "subject": workflow.info().workflow_id}

    def _budget_payload(self, step: str) -> dict[str, Any]:
        """What a budget raise is bound to (its approval's action digest)."""
        budget = self._budget or self.inp.budget
        named = self.named_by()
        run = {"workflow": workflow.info().workflow_id} if named is None else {named[1]: named[2]}
        return {**run, "step": step, "budget": budget.run_usd}

    async def _raise_budget(self, step: str, why: str) -> None:
        """Ask who may raise the run's budget (policy), then ask them (an approval round)."""
        budget = self._budget or self.inp.budget
        self.audit.record(
            "baton:workflow", self.budget_refused_event, detail={"step": step}, rationale=why
        )
        [decision] = await self.kill_switch.step(
            "policy",
            self.policy_activity,
            PolicyBatch(queries=[self._budget_query(step)]),
            f"policy {self.budget_policy}: who may raise the model budget",
        )
        if decision.verdict != "require_approval":
            raise errors.failure(
                BUDGET_EXCEEDED,
                f"{why}; and nobody may raise it: {'; '.join(decision.reasons)}",
                decision_ids=[decision.decision_id],
            )
        await self.approve(
            ApprovalRound(
                action="raise_model_budget",
                payload=self._budget_payload(step),
                summary=f"raise the model budget of {self._budget_subject()} ({step}): {why}",
                obligations=decision.obligations,
                policy_reasons=decision.reasons,
                action_payload={
                    ("budget_usd" if k == "budget" else k): v
                    for k, v in self._budget_payload(step).items()
                },
                waiting=f"waiting for a budget raise ({step})",
                restore_stage=True,
                listed=self.budget_rounds_listed,
            )
        )
        await self.audit.flush()  # a gate that defers approved events holds nothing back here
        # Approved: the run's own cap is lifted (the tenant's daily cap, policy data, still holds).
        self._budget = Budget(run_usd=None, over_budget=budget.over_budget)

    def _budget_subject(self) -> str:
        named = self.named_by()  # ("acme", "case_id", "C-1") -> "case C-1"
        return workflow.info().workflow_id if named is None else f"{named[1][:-3]} {named[2]}"

    def brief_status(self) -> dict[str, Any]:
        """A short status for a process's own query: stage, model tiers, tokens, cost, SLA
        breach and the pending approval requests."""
        return {
            "stage": self.stage,
            "tiers": self.tiers,
            "tokens": self.cost.tokens,
            "cost_usd": self.cost.cost_usd,
            "sla_breached": self.sla_breached,
            "pending": [r.request_id for r in self.gate.pending()],
        }


class BlackboardProcess(GovernedProcess):
    """A governed process whose agents cooperate through a versioned blackboard
    (workflows/blackboard.py): each agent is a governed agent step that reads a snapshot and
    proposes writes with the versions it read; a stale write is audited and the agent runs
    again on fresh state (at most ``inp.max_conflict_retries`` times, then the run fails
    ``BlackboardConflicts``). Accepted writes are persisted by ``board_persist_activity`` (the
    process's, idempotent per entry) and queryable (``board_history``). The process sets
    ``self.board`` in its ``__init__``."""

    board: Blackboard
    board_persist_activity: Callable[[Any, PersistBoardInput], Awaitable[Any]]

    async def board_agent(
        self,
        role: str,
        activity: Callable[[Any, Any], Awaitable[BoardProposal]],
        ask: Callable[[dict[str, BoardSlot]], Any],
    ) -> None:
        """Run the agent ``role`` on the board until its writes apply; ``ask(snapshot)`` is the
        activity's input (the snapshot the agent reads)."""

        async def propose(snapshot: dict[str, BoardSlot]) -> Sequence[BoardWrite]:
            summary = f"{role} (LLM): blackboard v{self.board.version}"
            proposal = await self._step("agent", activity, ask(snapshot), summary)
            return proposal.writes

        await cooperate_audited(
            self.board,
            f"agent:{role}",
            propose,
            max_retries=self.inp.max_conflict_retries,
            audit=self.audit,
        )

    async def persist_board(self) -> None:
        """Persist the board's entries written since the last call (none: nothing runs)."""
        entries = list(self.board.unpersisted())
        if not entries:
            return
        await self._step(
            "connector",
            self.board_persist_activity,
            PersistBoardInput(board=self.board.name, entries=entries),
            f"blackboard: persist {len(entries)} entries",
        )
        self.board.mark_persisted(len(entries))

    def board_facts(self) -> dict[str, int]:
        """The board's version and how many writes it refused (status, result, audit)."""
        return {"board_version": self.board.version, "conflicts": len(self.board.conflicts)}

    @workflow.query(name=BOARD_HISTORY_QUERY)
    def board_history(self) -> list[BoardEntry]:
        return self.board.history()


__all__ = [
    "ApprovalHandlers",
    "BlackboardProcess",
    "BUDGET_RAISE_PATCH",
    "BUDGET_RAISE_POLICY",
    "CHANGED_ONLY_PATCH",
    "DELEGATION_POLICY",
    "GovernedProcess",
    "RunCost",
    "set_search_attributes",
]
