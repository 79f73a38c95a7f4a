"""The typed client service teams use to run Baton processes from their own code.

    client = await BatonClient.connect("temporal.example.com:7233", namespace="finance")
    handle = await client.start_finance_close(
        FinanceCloseInput(tenant="acme", period="2026-10", requested_by="alice"))
    print(await client.status(handle.id))
    result = await client.result(handle.id)

The business key is the workflow id (``finance-close/<tenant>/<period>``): a second start of the
same period while one runs is refused (:class:`ProcessAlreadyStarted`) or joined
(``join_existing=True``); a period already closed successfully cannot be started again.

Canaries: built with ``canary=`` (activities.canary.Canary, or anything with its ``assign``), a
start that does not pin ``version`` gets the version the process's canary assigns to its
business key; the version is recorded in the input, search attribute ``BatonVersion`` and memo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    Interceptor,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.converter import PayloadCodec
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from workflows import visibility
from workflows.canary_monitor import CanaryMonitorWorkflow, monitor_id
from workflows.client_auction import DocumentReviewClient
from workflows.client_errors import (
    ApprovalRefused,
    BatonClientError,
    NoPendingApproval,
    ProcessAlreadyStarted,
)
from workflows.contracts import (
    CANARY_CHANGED_SIGNAL,
    DEFAULT_TASK_QUEUE,
    KILL_SWITCH_RELEASED_SIGNAL,
    PENDING_MEMO,
    VERSION_MEMO,
    ApprovalAck,
    ApprovalDecision,
    ApprovalRequest,
    BoardEntry,
    CanaryEvaluation,
    CanaryMonitorInput,
    CloseException,
    EntryAmendment,
    FinanceCloseInput,
    FinanceCloseResult,
    GrantedEntitlement,
    OnboardingInput,
    OnboardingResult,
    OnboardingStatus,
    PendingApproval,
    PostedEntry,
    ProcessStatus,
    ShadowDiff,
    ShadowDifference,
)
from workflows.contracts_customer import (
    CustomerOnboardingInput,
    CustomerOnboardingResult,
    CustomerOnboardingStatus,
)
from workflows.contracts_security import ApprovalTrust
from workflows.customer_onboarding import PROCESS as CUSTOMER_ONBOARDING
from workflows.customer_onboarding import CustomerOnboardingWorkflow
from workflows.dsl.model import ProcessRunInput
from workflows.finance_close import PROCESS as FINANCE_CLOSE
from workflows.finance_close import FinanceCloseWorkflow
from workflows.hr_onboarding import PROCESS as HR_ONBOARDING
from workflows.hr_onboarding import HrOnboardingWorkflow
from workflows.plugin import BatonPlugin
from workflows.registry import ProcessSpec, UnknownProcess, spec_for, spec_named
from workflows.signed_approval import SEALED_PREFIX, seal_assertion

#: What a run starts with in the Web UI's list: nothing at stake yet and nothing spent. The
#: workflow sets the same values itself (for runs started elsewhere) and, finding them set,
#: writes nothing (workflows/process_base.set_search_attributes).
_UNSPENT = (
    SearchAttributePair(visibility.RISK, "low"),
    SearchAttributePair(visibility.COST_USD, 0.0),
    SearchAttributePair(visibility.TOKENS, 0),
)


async def connect_client(
    target_host: str | None = None,
    *,
    namespace: str | None = None,
    profile: str | None = None,
    payload_codec: PayloadCodec | None = None,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """Connect with Temporal's envconfig (TOML profile + TEMPORAL_* variables, TLS, API key).

    Explicit arguments win over the profile; the Baton plugin (pydantic converter) is always on,
    with ``payload_codec`` (``Settings.payload_codec()``: AES-GCM encryption) when given. Workers
    built from this client use the same converter.
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=profile))
    if target_host:
        config["target_host"] = target_host
    config.setdefault("target_host", "localhost:7233")
    if namespace:
        config["namespace"] = namespace
    return await Client.connect(
        **config,
        plugins=[BatonPlugin(payload_codec)],
        runtime=runtime,
        interceptors=interceptors,
    )


_Started = TypeVar("_Started", FinanceCloseInput, OnboardingInput)
A = TypeVar("A", PostedEntry, GrantedEntitlement)  # an action a shadow diff pairs up


class VersionAssigner(Protocol):
    """Picks the process version of a new run (activities.canary.Canary)."""

    def assign(self, process: str, business_key: str) -> str: ...


class BatonClient(DocumentReviewClient):
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        canary: VersionAssigner | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        #: without one, runs that do not pin a version get "stable"
        self.canary = canary
        #: the approval issuer put into every start that does not name one (signed approvals)
        self.approval_trust: ApprovalTrust | None = None
        #: the approver's JWT attached to decisions that carry none
        self.approval_token: str | None = None

    @classmethod
    async def connect(
        cls,
        target_host: str | None = None,
        *,
        namespace: str | None = None,
        profile: str | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
        canary: VersionAssigner | None = None,
        payload_codec: PayloadCodec | None = None,
    ) -> BatonClient:
        client = await connect_client(
            target_host, namespace=namespace, profile=profile, payload_codec=payload_codec
        )
        return cls(client, task_queue=task_queue, canary=canary)

    # -- start --------------------------------------------------------------------------------

    async def start(
        self, inp: BaseModel, *, join_existing: bool = False
    ) -> WorkflowHandle[Any, Any]:
        """Start any registered process (workflows/registry.py) from its input, under its
        business key. Finance close and HR onboarding: a canary-assigned version, and
        ``ProcessAlreadyStarted`` for a key already running (``join_existing`` attaches to it);
        customer onboarding: the run of that customer, started at most once; a support case:
        the case's run. The typed ``start_*`` methods are this, with their input's type."""
        spec = spec_for(inp)
        if spec.start == "versioned":
            return await self._start_versioned(spec, inp, join_existing=join_existing)
        if spec.start == "once":
            handle, _ = await self.start_customer_onboarding(inp)  # type: ignore[arg-type]
            return handle
        if isinstance(inp, ProcessRunInput):
            raise UnknownProcess(
                "a YAML process starts with workflows.dsl.client.start_process (or `baton run`): "
                "its run id is not a business key"
            )
        try:
            return await self.client.start_workflow(
                spec.workflow.run,  # type: ignore[attr-defined]
                inp,
                id=spec.business_key(inp),
                task_queue=self.task_queue,
                static_summary=spec.summary(inp),
            )
        except WorkflowAlreadyStartedError:
            raise ProcessAlreadyStarted(spec.business_key(inp)) from None

    async def start_finance_close(
        self, inp: FinanceCloseInput | dict[str, Any], *, join_existing: bool = False
    ) -> WorkflowHandle[FinanceCloseWorkflow, FinanceCloseResult]:
        """Start (or, with ``join_existing``, attach to) the close of one tenant's period.

        A dict is validated first: a bad field raises ``pydantic.ValidationError`` naming it,
        and no workflow is started. Unless ``version`` is given, the process's canary (if this
        client has one) assigns it, sticky per business key.
        """
        spec = spec_named(FINANCE_CLOSE)
        return await self._start_versioned(spec, spec.validate(inp), join_existing=join_existing)

    async def start_onboarding(
        self, inp: OnboardingInput | dict[str, Any], *, join_existing: bool = False
    ) -> WorkflowHandle[HrOnboardingWorkflow, OnboardingResult]:
        """Start (or attach to) the onboarding of one new hire; business key
        ``onboarding/<tenant>/<employee id>``. A dict is validated first (a bad field raises
        ``pydantic.ValidationError`` naming it, and nothing starts)."""
        spec = spec_named(HR_ONBOARDING)
        return await self._start_versioned(spec, spec.validate(inp), join_existing=join_existing)

    async def _start_versioned(
        self, spec: ProcessSpec, inp: Any, *, join_existing: bool
    ) -> WorkflowHandle[Any, Any]:
        """A process with canary versions and shadow runs (finance close, HR onboarding)."""
        inp = self._with_trust(inp)
        workflow_id = spec.business_key(inp)
        if self.canary is not None and "version" not in inp.model_fields_set:
            # a shadow run gets the version its production run gets (the same business key)
            key = workflow_id.removeprefix("shadow/")
            version = await asyncio.to_thread(self.canary.assign, spec.name, key)
            inp = spec.input.model_validate({**inp.model_dump(), "version": version})
        return await self._start_keyed(
            spec.workflow.run,  # type: ignore[attr-defined]
            inp,
            workflow_id,
            join_existing=join_existing,
            # a failed, rejected or cancelled run may run again; a completed one may not
            # (a shadow run may always be repeated: it changes nothing)
            id_reuse_policy=(
                WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if inp.shadow
                else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
            ),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(visibility.VERSION, inp.version),
                    SearchAttributePair(visibility.PROCESS, spec.name),
                    SearchAttributePair(visibility.TENANT, inp.tenant),
                    SearchAttributePair(visibility.APPROVAL_STATE, "none"),
                    *_UNSPENT,
                    SearchAttributePair(visibility.SHADOW, inp.shadow),
                ]
            ),
            memo={VERSION_MEMO: inp.version, **spec.memo(inp)},
            static_summary=spec.summary(inp),
            static_details=spec.details(inp),
        )

    async def start_customer_onboarding(
        self, inp: CustomerOnboardingInput | dict[str, Any]
    ) -> tuple[WorkflowHandle[CustomerOnboardingWorkflow, CustomerOnboardingResult], bool]:
        """Start the onboarding of one new customer, at most once per customer: (handle,
        started). Business key ``customer-onboarding/<tenant>/<customer>``; a run that exists
        (running or closed, whatever its outcome) is returned with ``started=False``, so the
        CRM trigger (baton/crm_trigger.py) may deliver an event any number of times. A dict is
        validated first (a bad field raises ``pydantic.ValidationError`` naming it)."""
        spec = spec_named(CUSTOMER_ONBOARDING)
        typed: CustomerOnboardingInput = spec.validate(inp)
        inp = typed
        workflow_id = spec.business_key(inp)
        existing = self.customer_onboarding(workflow_id)
        try:
            run = await existing.describe()
            found = self.client.get_workflow_handle_for(
                CustomerOnboardingWorkflow.run, workflow_id, run_id=run.run_id
            )
            return found, False
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            handle = await self.client.start_workflow(
                CustomerOnboardingWorkflow.run,
                inp,
                id=workflow_id,
                task_queue=self.task_queue,
                # a concurrent start of the same customer joins the run; a closed one refuses
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(visibility.PROCESS, CUSTOMER_ONBOARDING),
                        SearchAttributePair(visibility.TENANT, inp.tenant),
                        SearchAttributePair(visibility.APPROVAL_STATE, "none"),
                        *_UNSPENT,
                    ]
                ),
                memo=spec.memo(inp),
                static_summary=spec.summary(inp),
                static_details=spec.details(inp),
            )
        except WorkflowAlreadyStartedError:
            return existing, False
        return handle, True

    def customer_onboarding(
        self, workflow_id: str
    ) -> WorkflowHandle[CustomerOnboardingWorkflow, CustomerOnboardingResult]:
        return self.client.get_workflow_handle_for(CustomerOnboardingWorkflow.run, workflow_id)

    async def customer_onboarding_status(self, workflow_id: str) -> CustomerOnboardingStatus:
        return await self.customer_onboarding(workflow_id).query(CustomerOnboardingWorkflow.status)

    def onboarding(
        self, workflow_id: str
    ) -> WorkflowHandle[HrOnboardingWorkflow, OnboardingResult]:
        return self.client.get_workflow_handle_for(HrOnboardingWorkflow.run, workflow_id)

    async def onboarding_status(self, workflow_id: str) -> OnboardingStatus:
        return await self.onboarding(workflow_id).query(HrOnboardingWorkflow.status)

    async def board_history(self, workflow_id: str) -> list[BoardEntry]:
        """Every accepted blackboard write of a run, oldest first."""
        return await self.onboarding(workflow_id).query(HrOnboardingWorkflow.board_history)

    # -- inspect --------------------------------------------------------------------------------

    def handle(self, workflow_id: str) -> WorkflowHandle[FinanceCloseWorkflow, FinanceCloseResult]:
        return self.client.get_workflow_handle_for(FinanceCloseWorkflow.run, workflow_id)

    async def status(self, workflow_id: str) -> ProcessStatus:
        return await self.handle(workflow_id).query(FinanceCloseWorkflow.status)

    async def execution_status(self, workflow_id: str) -> WorkflowExecutionStatus | None:
        return (await self.handle(workflow_id).describe()).status

    async def pending_approvals(self, workflow_id: str) -> list[ApprovalRequest]:
        return await self.handle(workflow_id).query(FinanceCloseWorkflow.pending_approvals)

    async def result(self, workflow_id: str) -> FinanceCloseResult:
        return await self.handle(workflow_id).result()

    async def close_exceptions(
        self, workflow_or_run_id: str
    ) -> tuple[str, WorkflowExecutionStatus | None, list[CloseException]]:
        """The entries a close holds as exceptions (policy denied them; they were not posted):
        from its result once it completed, else from its status query. Takes the close's
        workflow id or one of its run ids; returns (workflow id, its status, the exceptions)."""
        workflow_id, run_id = await self._resolve_run(workflow_or_run_id)
        handle = self.client.get_workflow_handle_for(
            FinanceCloseWorkflow.run, workflow_id, run_id=run_id
        )
        status = (await handle.describe()).status
        if status == WorkflowExecutionStatus.COMPLETED:
            return workflow_id, status, (await handle.result(follow_runs=False)).exceptions
        return workflow_id, status, (await handle.query(FinanceCloseWorkflow.status)).exceptions

    async def _resolve_run(self, workflow_or_run_id: str) -> tuple[str, str | None]:
        """(workflow id, run id or None): a workflow id as given, or the run id's workflow."""
        try:
            await self.client.get_workflow_handle(workflow_or_run_id).describe()
            return workflow_or_run_id, None
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        quoted = workflow_or_run_id.replace("'", "")
        async for found in self.client.list_workflows(f"RunId = '{quoted}'", limit=1):
            return found.id, found.run_id
        raise LookupError(f"no workflow or run with the id {workflow_or_run_id!r}")

    async def cancel(self, workflow_id: str) -> None:
        """Request cancellation: the run compensates what it did, then ends as cancelled."""
        await self.handle(workflow_id).cancel()

    def _with_trust(self, inp: _Started) -> _Started:
        if self.approval_trust is None or "approval_trust" in inp.model_fields_set:
            return inp
        return inp.model_copy(update={"approval_trust": self.approval_trust})

    # -- decide -------------------------------------------------------------------------------

    async def decide(self, workflow_id: str, decision: ApprovalDecision) -> ApprovalAck:
        """Send a decision as an Update; refused decisions raise :class:`ApprovalRefused`.

        A decision without an identity assertion gets this client's ``approval_token``. When
        the approval trust names the workers' seal key, the token is sealed to it first, so it
        never enters the run's history in clear."""
        if decision.assertion is None and self.approval_token:
            decision = decision.model_copy(update={"assertion": self.approval_token})
        seal_key = self.approval_trust.seal_key if self.approval_trust is not None else None
        if decision.assertion and seal_key and not decision.assertion.startswith(SEALED_PREFIX):
            sealed = seal_assertion(decision.assertion, seal_key)
            decision = decision.model_copy(update={"assertion": sealed})
        try:
            # temporalio 1.35's stubs type an async update that has a validator as returning a
            # coroutine; the call returns the ApprovalAck itself.
            return await self.handle(workflow_id).execute_update(
                FinanceCloseWorkflow.decide_approval,  # type: ignore[arg-type]
                decision,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ApprovalRefused(getattr(cause, "message", None) or str(cause)) from err

    async def approve(
        self,
        workflow_id: str,
        *,
        approver: str,
        rationale: str,
        request_id: str | None = None,
        action_digest: str | None = None,
    ) -> ApprovalAck:
        return await self._decide(
            workflow_id, "approve", approver, rationale, request_id, action_digest
        )

    async def reject(
        self,
        workflow_id: str,
        *,
        approver: str,
        rationale: str,
        request_id: str | None = None,
        action_digest: str | None = None,
    ) -> ApprovalAck:
        return await self._decide(
            workflow_id, "reject", approver, rationale, request_id, action_digest
        )

    async def amend(
        self,
        workflow_id: str,
        *,
        approver: str,
        rationale: str,
        amendments: list[EntryAmendment | dict[str, Any]],
        request_id: str | None = None,
        action_digest: str | None = None,
    ) -> ApprovalAck:
        """Change entries under review (amount and/or account). Policy re-checks the amended
        entries, which may need a fresh approval from someone other than ``approver``."""
        changes = [EntryAmendment.model_validate(a) for a in amendments]
        return await self._decide(
            workflow_id, "amend", approver, rationale, request_id, action_digest, changes
        )

    async def edit_tool_call(
        self,
        workflow_id: str,
        *,
        approver: str,
        rationale: str,
        arguments: dict[str, Any],
        request_id: str | None = None,
        action_digest: str | None = None,
    ) -> ApprovalAck:
        """Edit the arguments of an agent's tool call held for approval (workflows/agent_loop.py):
        the edit is validated against the tool's argument model, digested again and checked by
        policy again; it may need a fresh approval from someone other than ``approver``."""
        return await self._decide(
            workflow_id, "amend", approver, rationale, request_id, action_digest,
            arguments=arguments,
        )  # fmt: skip

    async def request_changes(
        self,
        workflow_id: str,
        *,
        approver: str,
        comment: str,
        request_id: str | None = None,
        action_digest: str | None = None,
    ) -> ApprovalAck:
        """Send the entries back to the preparer agent with ``comment``; its revision comes
        back through policy and, if needed, a fresh approval request."""
        return await self._decide(
            workflow_id, "request_changes", approver, comment, request_id, action_digest
        )

    # -- shadow runs ---------------------------------------------------------------------------

    async def shadow_diff(self, shadow_id: str, production_id: str | None = None) -> ShadowDiff:
        """Compare a finished shadow run with the production run of the same input (by default
        the shadow id without its 'shadow/' prefix): actions, amounts, approvals, cost."""
        production_id = production_id or shadow_id.removeprefix("shadow/")
        if production_id.startswith("onboarding/"):
            prod_hire = await self.onboarding(production_id).result()
            shadow_hire = await self.onboarding(shadow_id).result()
            return diff_onboarding(production_id, prod_hire, shadow_id, shadow_hire)
        prod, shadow = await self.result(production_id), await self.result(shadow_id)
        return diff_results(production_id, prod, shadow_id, shadow)

    # -- kill switch: the Temporal side (engaging it is activities/kill_switch.py) -------------

    async def running_in_scope(self, scope: str) -> list[str]:
        """Ids of the running Baton runs on this client's task queue that a kill-switch scope
        covers ('global', 'process:<name>', 'tenant:<name>'; 'agent:<role>' covers every run,
        since any may call that agent)."""
        kind, _, value = scope.partition(":")
        clauses = [
            "ExecutionStatus = 'Running'",
            f"TaskQueue = {_quoted(self.task_queue)}",
            f"{visibility.PROCESS.name} IS NOT NULL",
        ]
        if kind == "process":
            clauses.append(f"{visibility.PROCESS.name} = {_quoted(value)}")
        elif kind == "tenant":
            clauses.append(f"{visibility.TENANT.name} = {_quoted(value)}")
        query = " AND ".join(clauses)
        return [w.id async for w in self.client.list_workflows(query)]

    async def cancel_in_scope(self, scope: str) -> list[str]:
        """Cancel every running run in ``scope``; each compensates what it did."""
        ids = await self.running_in_scope(scope)
        for workflow_id in ids:
            await self.client.get_workflow_handle(workflow_id).cancel()
        return ids

    async def release_held(self) -> list[str]:
        """Tell every run on this task queue holding for the kill switch to look again now."""
        query = (
            f"ExecutionStatus = 'Running' AND TaskQueue = {_quoted(self.task_queue)} "
            f"AND {visibility.HELD.name} = true"
        )
        ids = [w.id async for w in self.client.list_workflows(query)]
        for workflow_id in ids:
            await self.client.get_workflow_handle(workflow_id).signal(KILL_SWITCH_RELEASED_SIGNAL)
        return ids

    # -- canaries: the monitor workflow (the canary itself is activities/canary.py) ------------

    def canary_monitor_id(self, process: str) -> str:
        return monitor_id(process, self.task_queue)

    def canary_monitor(
        self, process: str
    ) -> WorkflowHandle[CanaryMonitorWorkflow, CanaryEvaluation]:
        return self.client.get_workflow_handle_for(
            CanaryMonitorWorkflow.run, self.canary_monitor_id(process)
        )

    async def start_canary_monitor(
        self, process: str, *, interval_seconds: float = 60.0, iterations_per_run: int = 500
    ) -> WorkflowHandle[CanaryMonitorWorkflow, CanaryEvaluation]:
        """Start the process's CanaryMonitor on this task queue, or, when it already runs, tell
        it to evaluate now (it keeps its interval). Idempotent."""
        handle = await self.client.start_workflow(
            CanaryMonitorWorkflow.run,
            CanaryMonitorInput(
                process=process,
                interval_seconds=interval_seconds,
                iterations_per_run=iterations_per_run,
            ),
            id=self.canary_monitor_id(process),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"Canary monitor of {process}",
            static_details=(
                f"Evaluates the canary of **{process}** every {interval_seconds:g}s and rolls it "
                "back when its KPIs are worse than the baseline's beyond the margins. "
                "`baton canary status` shows the numbers."
            ),
        )
        await self.canary_changed(process)
        return handle

    async def canary_changed(self, process: str) -> bool:
        """Tell a running monitor the canary changed (it evaluates at once, and ends when the
        canary is no longer active). False when no monitor runs."""
        handle = self.client.get_workflow_handle(self.canary_monitor_id(process))
        try:
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return False
            await handle.signal(CANARY_CHANGED_SIGNAL)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    # -- the approver inbox ----------------------------------------------------------------------

    async def inbox(
        self,
        *,
        role: str | None = None,
        process: str | None = None,
        task_queue: str | None = None,
    ) -> list[PendingApproval]:
        """Every pending approval across all runs, from visibility (search attributes + memo):
        no run is queried, so the inbox works while workers are down. Oldest first."""
        clauses = [f"{visibility.APPROVAL_STATE.name} = 'pending'", "ExecutionStatus = 'Running'"]
        if role:
            clauses.append(f"{visibility.PENDING_ROLES.name} = {_quoted(role)}")
        if process:
            clauses.append(f"{visibility.PROCESS.name} = {_quoted(process)}")
        if task_queue:
            clauses.append(f"TaskQueue = {_quoted(task_queue)}")
        found: list[PendingApproval] = []
        async for execution in self.client.list_workflows(" AND ".join(clauses)):
            lines = await execution.memo_value(PENDING_MEMO, default=[])
            for line in lines:
                item = PendingApproval.model_validate(line)
                if role is None or role in item.approver_roles:
                    found.append(item)
        return sorted(found, key=lambda p: (p.requested_at, p.workflow_id))

    async def _decide(
        self,
        workflow_id: str,
        verdict: str,
        approver: str,
        rationale: str,
        request_id: str | None,
        action_digest: str | None,
        amendments: list[EntryAmendment] | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> ApprovalAck:
        """Fill in the request id and digest from the pending request when not given.

        Callers that showed the request to a human should pass the digest the human saw, so a
        change in between is refused.
        """
        if request_id is None or action_digest is None:
            pending = await self.pending_approvals(workflow_id)
            match = [p for p in pending if request_id in (None, p.request_id)]
            if not match:
                raise NoPendingApproval(f"{workflow_id} has no pending approval request")
            if len(match) > 1:
                raise NoPendingApproval(
                    f"{workflow_id} has {len(match)} pending requests; name one with request_id"
                )
            request_id = match[0].request_id
            action_digest = action_digest or match[0].action_digest
        decision = ApprovalDecision(
            request_id=request_id,
            approver=approver,
            verdict=verdict,  # type: ignore[arg-type]
            rationale=rationale,
            action_digest=action_digest,
            amendments=amendments or [],
            arguments=arguments,
        )
        return await self.decide(workflow_id, decision)


def diff_results(
    production_id: str, prod: FinanceCloseResult, shadow_id: str, shadow: FinanceCloseResult
) -> ShadowDiff:
    """A close's shadow run against production: per entry, the posting (account and amount) and
    whether an approval was needed (who approved differs by design: the shadow's is simulated)."""

    def action(entry: PostedEntry | None) -> str:
        if entry is None:
            return "-"
        approved = f", approved by {' + '.join(entry.approved_by)}" if entry.approved_by else ""
        return f"post {entry.amount} to {entry.account}{approved}"

    return _diff(
        production_id,
        prod,
        {p.entry_id: p for p in prod.posted},
        shadow_id,
        shadow,
        {p.entry_id: p for p in shadow.posted},
        same=lambda p, s: (
            (p.account, p.amount) == (s.account, s.amount)
            and bool(p.approved_by) == bool(s.approved_by)
        ),
        action=action,
    )


def diff_onboarding(
    production_id: str, prod: OnboardingResult, shadow_id: str, shadow: OnboardingResult
) -> ShadowDiff:
    """An onboarding shadow run against production: per entitlement, granted or not and whether
    an approval was needed (who approved differs by design: the shadow's is simulated)."""

    def action(grant: GrantedEntitlement | None) -> str:
        if grant is None:
            return "-"
        approved = f", approved by {' + '.join(grant.approved_by)}" if grant.approved_by else ""
        return f"grant {grant.system}:{grant.name}{approved}"

    return _diff(
        production_id,
        prod,
        {f"{g.system}:{g.name}": g for g in prod.granted},
        shadow_id,
        shadow,
        {f"{g.system}:{g.name}": g for g in shadow.granted},
        same=lambda p, s: bool(p.approved_by) == bool(s.approved_by),
        action=action,
    )


def _diff(
    production_id: str,
    prod: FinanceCloseResult | OnboardingResult,
    prod_actions: dict[str, A],
    shadow_id: str,
    shadow: FinanceCloseResult | OnboardingResult,
    shadow_actions: dict[str, A],
    *,
    same: Callable[[A, A], bool],
    action: Callable[[A | None], str],
) -> ShadowDiff:
    """Pair the two runs' actions by key: an action on one side only, or one ``same`` does not
    accept, is a difference; approvals, tokens and cost are reported side by side."""
    alike, differences = 0, []
    for key in sorted(prod_actions.keys() | shadow_actions.keys()):
        p, s = prod_actions.get(key), shadow_actions.get(key)
        if p is not None and s is not None and same(p, s):
            alike += 1
        else:
            differences.append(
                ShadowDifference(entry_id=key, production=action(p), shadow=action(s))
            )
    return ShadowDiff(
        production_id=production_id,
        shadow_id=shadow_id,
        same_actions=alike,
        differences=differences,
        production_approvals=[", ".join(o.approvers) or o.outcome for o in prod.approvals],
        shadow_approvals=[", ".join(o.approvers) or o.outcome for o in shadow.approvals],
        production_tokens=prod.tokens,
        shadow_tokens=shadow.tokens,
        production_cost_usd=prod.cost_usd,
        shadow_cost_usd=shadow.cost_usd,
    )


def _quoted(value: str) -> str:
    """A visibility-query string literal; refuses quotes rather than escaping them."""
    if "'" in value or '"' in value or "\\" in value:
        raise ValueError(f"filter value {value!r} may not contain quotes or backslashes")
    return f"'{value}'"


#: the client's API; its errors are re-exported from workflows/client_errors.py
__all__ = [
    "ApprovalRefused",
    "BatonClient",
    "BatonClientError",
    "NoPendingApproval",
    "ProcessAlreadyStarted",
    "VersionAssigner",
    "connect_client",
    "diff_onboarding",
    "diff_results",
]
