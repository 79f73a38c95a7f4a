"""LLM agents of the finance close, called through the real ``openai`` SDK.

Each agent is one activity: it sends a system prompt whose first line names the agent and the
agent's input as a JSON document, asks for a JSON-schema structured answer, parses it into a
pydantic model, and writes an audit row with model, tokens, cost and digests (never the prompt or
the answer themselves: the audit ledger is the record, by digest, unless a later opt-in says so).

Retries belong to Temporal: the SDK client is built with ``max_retries=0`` (worker.py) so every
attempt is visible in the workflow history. Provider errors are mapped to ``ApplicationError``
types here: 408/409/429/5xx, timeouts and connection errors are retryable (``Retry-After``
becomes ``next_retry_delay``); other 4xx are not. An answer that is not valid JSON for the schema
is retryable a bounded number of times (the agent preset's ``maximum_attempts``): a model may
answer well on the next try, but not forever.

Endpoint: any OpenAI-compatible server (OpenAI, Azure OpenAI, vLLM, Ollama) by ``OPENAI_BASE_URL``;
the default is the local rule-based model server in temporal-dev/, which is not an LLM.

Governance: before every model call ``_ask`` asks the base policy (``baton/base/agent_call``,
policy/base/agent_call.rego) whether this agent role may call this model endpoint for this
tenant: data residency (``BATON_MODEL_REGION`` is the endpoint's region), the tenant's daily spend
cap (today's spend from ``activities/spend.py`` plus an estimate of this call) and the PII
obligation. A deny is a non-retryable ``PolicyDenied`` (an engine that did not answer: a
retryable ``PolicyUnavailable``; nothing is sent either way). A ``redact`` obligation masks every
string of the agent input (activities/redaction.py) except ``VERBATIM_FIELDS``: ids the answer
must echo and typed values, which are checked instead, and fail the call (``RedactionFailed``)
if they hold personal data. Every decision is an audit row; the call's own audit row records the
decision id, the policy revision and how many items of each kind were masked (never the values).

Versions (canaries): each agent input names the run's process version (``AgentInput.version``,
registry ``PROCESS_VERSIONS`` in workflows/contracts.py). The version picks the prompt variant
(``PROMPTS``) and the model (a model route) per agent role; "stable" is the worker's configured
prompt and ``BATON_MODEL``. The version is never sent to the model; the call's audit row records
it with the model used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import spend, tracing
from activities.audit import AuditLedger, activity_event
from activities.kill_switch import KillSwitch, Subject
from activities.policy import (
    POLICY_UNAVAILABLE_ERROR,
    UNKNOWN_REVISION,
    PolicyEngine,
    decide,
    is_unavailable,
    unavailable_error,
)
from activities.redaction import RedactionError, redact_document
from activities.throttle import Throttle
from workflows.contracts import (
    PROCESS_BY_WORKFLOW_TYPE,
    PROCESS_VERSIONS,
    STABLE_VERSION,
    AdjustingEntry,
    AdjustmentProposal,
    BoardAgentInput,
    BoardProposal,
    BoardWrite,
    CloseMemo,
    ComplianceFinding,
    ComplianceInput,
    ComplianceReview,
    MemoInput,
    PolicyDecision,
    PolicyQuery,
    ProposeAdjustmentsInput,
    ReviseAdjustmentsInput,
    TokenUsage,
    digest,
)

if TYPE_CHECKING:
    from activities.router import Router

T = TypeVar("T", bound=BaseModel)

RETRYABLE_STATUS = {408, 409, 429}
HEARTBEAT_EVERY_SECONDS = 5.0

#: The base policy asked before every model call, and the action it is asked about.
AGENT_CALL_POLICY = "baton/base/agent_call"
LLM_CALL = "llm_call"
#: The region of the model endpoint when the worker is not told (BATON_MODEL_REGION).
DEFAULT_MODEL_REGION = "eu"
#: Completion tokens assumed when estimating a call's cost for the spend cap: the answer's size
#: is unknown before the call (the agents' schema-bound answers stay well below this).
ESTIMATED_COMPLETION_TOKENS = 1000

#: Fields of the agents' inputs sent verbatim under a ``redact`` obligation (a list or object
#: under one of them too): ids the answer must echo exactly (entry_id, source_ids, ...) and typed
#: values (amounts, dates, accounts, the tenant and period) or policy output (verdicts,
#: revisions, obligations). They are still checked: personal data in one fails the call rather
#: than being sent. Everything else (memos, descriptions, references, rationales, comments,
#: policy reasons, summaries) is free text and is redacted.
#: Fields of the agents' inputs that are for the worker, never for the model.
NOT_SENT = {"version", "budget", "min_tier"}  # budget/min_tier: routed calls

VERBATIM_FIELDS = frozenset(
    {
        "tenant", "period", "entry_id", "line_id", "source_ids", "duplicate_ledger_ids",
        "subject", "account", "amount", "value_date", "booked_on", "decision_id", "policy",
        "verdict", "revision", "engine", "obligations", "employee_id", "start_date",
        "role", "department", "country", "key", "version",
        "case_id", "passage_id", "category", "priority", "confidence",
    }
)  # fmt: skip


def agent_call_policy_input(
    *,
    role: str,
    tenant: str,
    endpoint: str,
    model: str,
    region: str,
    spent_today_usd: float,
    estimated_cost_usd: float,
    now: datetime,
) -> dict[str, Any]:
    """The input document of the base policy for one model call (policy/base/agent_call.rego)."""
    return {
        "action": LLM_CALL,
        "role": role,
        "tenant": tenant,
        "model": {"endpoint": endpoint, "name": model, "region": region},
        "spent_today_usd": spent_today_usd,
        "estimated_cost_usd": estimated_cost_usd,
        "now": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


@dataclass(frozen=True)
class CallTarget:
    """A model endpoint the router (activities/router.py) chose for one request."""

    endpoint: str
    region: str
    estimate: float  # USD this request may cost
    call_index: int  # the request's number within the activity attempt


@dataclass(frozen=True)
class GovernedCall:
    """What the policy gate decided for one model call, and what was sent."""

    decision: PolicyDecision
    tenant: str
    day: str  # UTC day the call's cost counts for
    content: str  # the user message as sent (redacted when policy said so)
    redacted: dict[str, int]  # kind -> items masked
    throttled_seconds: float = 0.0  # waited for a throttle slot (activities/throttle.py)
    route: Route | None = None  # the version's prompt variant and model for this call
    #: Charged per request by the router (spend.ModelCharge): the audit row adds no AgentSpend.
    charged: bool = False


# The gate's result for the running activity (each activity runs in a task of its own, so this
# never leaks between calls): set by _ask, read by _audit for the call's audit row.
_GOVERNED: ContextVar[GovernedCall | None] = ContextVar("baton_governed_call", default=None)


# Wire models: what the model must answer. Strict-mode friendly (every field required, no extra
# keys, plain JSON types); amounts are decimal strings so no cent is lost to floats.
class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WireEntry(_Wire):
    entry_id: str
    account: str
    amount: str
    source_ids: list[str]
    rationale: str


class _WireProposal(_Wire):
    entries: list[_WireEntry]


class _WireFinding(_Wire):
    entry_id: str
    severity: str
    note: str


class _WireReview(_Wire):
    summary: str
    findings: list[_WireFinding]


class _WireMemo(_Wire):
    memo: str


class _WireBoardWrite(_Wire):
    key: str
    items: list[str]
    reason: str


class _WireBoard(_Wire):
    writes: list[_WireBoardWrite]


RECONCILER_PROMPT = """agent: reconciler
You are the reconciler of a month-end close. The input lists bank lines and ledger entries that
did not match, and ledger entries booked twice. Propose one adjusting journal entry per item that
needs one, on an allowed account, with the signed amount and a rationale naming the source ids."""

COMPLIANCE_PROMPT = """agent: compliance_checker
You review proposed adjusting entries and the policy verdicts on them. Report a finding for every
entry that deserves attention (severity info, warning or blocker) and a one-paragraph summary."""

REVISER_PROMPT = """agent: reviser
You prepared the adjusting entries in the input; an approver sent them back with a comment asking
for changes. Return the revised entries (same entry ids unless the comment asks to split or drop
one), on allowed accounts, with signed amounts and a rationale that says what changed and why."""

MEMO_PROMPT = """agent: close_memo_writer
Write the month-end close memo for the controller: what was reconciled, what was adjusted and why,
and what compliance found. Plain text, at most 15 lines."""

IDENTITY_VERIFIER_PROMPT = """agent: identity_verifier
You verify a new hire's identity for onboarding. The input holds the HRIS record and the shared
blackboard. Write key 'identity' (the verification result and what it rests on) and add one item
to the shared 'checklist' (keep every item already there). Each write needs a reason."""

POLICY_EDUCATOR_PROMPT = """agent: policy_educator
You explain to a new hire the company policies that apply to their role and country. The input
holds the HRIS record and the shared blackboard. Write key 'policies' (one item per policy:
'<name>: <one-line explanation>') and add one item to the shared 'checklist' (keep every item
already there). Each write needs a reason."""

ENTITLEMENT_PROMPTER_PROMPT = """agent: entitlement_prompter
You propose the system accesses a new hire's role needs, least privilege first. The input holds
the HRIS record and the shared blackboard. Write key 'entitlements' (one item per access:
'<system>:<entitlement>') and add one item to the shared 'checklist' (keep every item already
there). Each write needs a reason."""

#: Candidate "reconciler-prompt-v2": the reconciler's instructions reworded (the first line, which
#: names the agent, never changes).
RECONCILER_PROMPT_V2 = """agent: reconciler
You reconcile a month-end close. For each unmatched bank line, unmatched ledger entry and
duplicate booking in the input, decide whether the books need an adjusting journal entry; when
they do, propose exactly one, on an allowed account, with the signed amount and a rationale that
cites the source ids. Prefer no entry over a guess."""

#: Candidate "policy-educator-prompt-v2" of HR onboarding: the educator's instructions reworded.
POLICY_EDUCATOR_PROMPT_V2 = """agent: policy_educator
Brief a new hire on the company policies that bind them: first those of their country, then
those of their role, then the company-wide ones. The input holds the HRIS record and the shared
blackboard. Write key 'policies' (one item per policy: '<name>: <one-line explanation>') and add
one item to the shared 'checklist' (keep every item already there). Each write needs a reason."""

#: Prompt text by agent role and variant; ProcessVersion.prompts names a variant per role.
PROMPTS: dict[str, dict[str, str]] = {
    "reconciler": {STABLE_VERSION: RECONCILER_PROMPT, "v2": RECONCILER_PROMPT_V2},
    "reviser": {STABLE_VERSION: REVISER_PROMPT},
    "compliance_checker": {STABLE_VERSION: COMPLIANCE_PROMPT},
    "close_memo_writer": {STABLE_VERSION: MEMO_PROMPT},
    "identity_verifier": {STABLE_VERSION: IDENTITY_VERIFIER_PROMPT},
    "policy_educator": {STABLE_VERSION: POLICY_EDUCATOR_PROMPT, "v2": POLICY_EDUCATOR_PROMPT_V2},
    "entitlement_prompter": {STABLE_VERSION: ENTITLEMENT_PROMPTER_PROMPT},
}

#: The blackboard agents of HR onboarding and the keys each may write (the shared checklist too).
BOARD_AGENT_KEYS: dict[str, frozenset[str]] = {
    "identity_verifier": frozenset({"identity", "checklist"}),
    "policy_educator": frozenset({"policies", "checklist"}),
    "entitlement_prompter": frozenset({"entitlements", "checklist"}),
}


@dataclass(frozen=True)
class Route:
    """What one agent call of one process version uses."""

    version: str
    variant: str  # prompt variant
    prompt: str
    model: str
    #: True when the process version names this agent's model (the router then keeps to it).
    pinned: bool = False


def route(process: str, version: str, agent: str, default_model: str) -> Route:
    """The prompt and model ``agent`` uses in ``version`` of ``process``.

    A version this worker does not know is a retryable ``UnknownProcessVersion`` (a worker of a
    newer build may know it; the agent preset bounds the attempts)."""
    spec = PROCESS_VERSIONS.get(process, {}).get(version)
    if spec is None:
        if version != STABLE_VERSION:
            raise ApplicationError(
                f"{agent}: this worker does not know version {version!r} of {process or '?'} "
                "(deploy the build whose PROCESS_VERSIONS registers it)",
                type="UnknownProcessVersion",
            )
        return Route(STABLE_VERSION, STABLE_VERSION, PROMPTS[agent][STABLE_VERSION], default_model)
    variant = spec.prompts.get(agent, STABLE_VERSION)
    prompt = PROMPTS[agent].get(variant)
    if prompt is None:
        raise ApplicationError(
            f"{agent}: version {version!r} names prompt variant {variant!r}, which this worker "
            "does not have",
            type="UnknownProcessVersion",
        )
    pinned = spec.models.get(agent)
    return Route(version, variant, prompt, pinned or default_model, pinned=pinned is not None)


def chat_request(
    client: AsyncOpenAI,
    model: str,
    agent: str,
    system: str,
    content: str,
    wire: type[BaseModel],
    timeout_seconds: float,
) -> Awaitable[Any]:
    """One chat completion asking ``agent`` for JSON of ``wire``'s schema (strict mode): the
    request every agent call sends, routed (activities/router.py) or not."""
    return client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": content},
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": agent, "schema": wire.model_json_schema(), "strict": True},
        },
        timeout=timeout_seconds,
    )


class AgentActivities:
    """The three LLM agents. Built once in worker.py with a shared ``AsyncOpenAI`` client."""

    def __init__(
        self,
        client: AsyncOpenAI,
        ledger: AuditLedger,
        *,
        model: str,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        timeout_seconds: float = 60.0,
        switch: KillSwitch | None = None,
        throttle: Throttle | None = None,
        policy: PolicyEngine | None = None,
        model_region: str = DEFAULT_MODEL_REGION,
    ) -> None:
        self.switch = switch
        self.throttle = throttle
        self.client = client
        self.ledger = ledger
        self.model = model
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self.timeout_seconds = timeout_seconds
        #: The base policy's engine; without one every model call is denied (fail closed).
        self.policy = policy
        self.model_region = model_region
        #: Set by worker.py: agents the model catalogue lists under ``agents`` are routed.
        self.router: Router | None = None

    @activity.defn(name="propose_adjustments")
    async def propose_adjustments(self, inp: ProposeAdjustmentsInput) -> AdjustmentProposal:
        wire, usage = await self._ask("reconciler", inp, _WireProposal)
        entries = _entries("reconciler", wire)
        await self._audit(
            "reconciler", "agent.proposed_adjustments", inp, wire, usage, {"entries": len(entries)}
        )
        return AdjustmentProposal(entries=entries, usage=usage)

    @activity.defn(name="revise_adjustments")
    async def revise_adjustments(self, inp: ReviseAdjustmentsInput) -> AdjustmentProposal:
        wire, usage = await self._ask("reviser", inp, _WireProposal)
        entries = _entries("reviser", wire)
        if not entries:
            raise ApplicationError(
                "reviser: the revision has no entries; dropping every entry is a rejection, "
                "which only an approver can decide",
                type="AgentOutputInvalid",
            )
        await self._audit(
            "reviser",
            "agent.revised_adjustments",
            inp,
            wire,
            usage,
            {"entries": len(entries), "reviewer": inp.reviewer},
        )
        return AdjustmentProposal(entries=entries, usage=usage)

    @activity.defn(name="review_compliance")
    async def review_compliance(self, inp: ComplianceInput) -> ComplianceReview:
        wire, usage = await self._ask("compliance_checker", inp, _WireReview)
        try:
            findings = [ComplianceFinding.model_validate(f.model_dump()) for f in wire.findings]
        except ValidationError as err:
            raise _invalid_output("compliance_checker", err) from err
        await self._audit(
            "compliance_checker",
            "agent.reviewed_compliance",
            inp,
            wire,
            usage,
            {"findings": len(findings)},
        )
        return ComplianceReview(summary=wire.summary, findings=findings, usage=usage)

    @activity.defn(name="write_close_memo")
    async def write_close_memo(self, inp: MemoInput) -> CloseMemo:
        wire, usage = await self._ask("close_memo_writer", inp, _WireMemo)
        await self._audit(
            "close_memo_writer",
            "agent.wrote_memo",
            inp,
            wire,
            usage,
            {"memo_chars": len(wire.memo)},
        )
        return CloseMemo(memo=wire.memo, usage=usage)

    # -- blackboard agents (HR onboarding) ---------------------------------------------------

    @activity.defn(name="verify_identity")
    async def verify_identity(self, inp: BoardAgentInput) -> BoardProposal:
        return await self._board_agent("identity_verifier", inp)

    @activity.defn(name="educate_policies")
    async def educate_policies(self, inp: BoardAgentInput) -> BoardProposal:
        return await self._board_agent("policy_educator", inp)

    @activity.defn(name="prompt_entitlements")
    async def prompt_entitlements(self, inp: BoardAgentInput) -> BoardProposal:
        return await self._board_agent("entitlement_prompter", inp)

    async def _board_agent(self, agent: str, inp: BoardAgentInput) -> BoardProposal:
        """Ask a blackboard agent for writes based on the snapshot in ``inp``; each write carries
        the version of its key the agent read, so a stale one is refused by the workflow."""
        wire, usage = await self._ask(agent, inp, _WireBoard)
        allowed = BOARD_AGENT_KEYS[agent]
        writes = []
        for w in wire.writes:
            if w.key not in allowed:
                raise ApplicationError(
                    f"{agent}: may write only {sorted(allowed)}, not {w.key!r}",
                    type="AgentOutputInvalid",
                )
            if not w.reason.strip():
                raise ApplicationError(
                    f"{agent}: the write to {w.key!r} gives no reason", type="AgentOutputInvalid"
                )
            read = inp.board.get(w.key)
            writes.append(
                BoardWrite(
                    key=w.key,
                    value=w.items,
                    expected_version=read.version if read is not None else 0,
                    reason=w.reason,
                )
            )
        await self._audit(
            agent,
            "agent.proposed_board_writes",
            inp,
            wire,
            usage,
            {
                "employee_id": inp.employee_id,
                "writes": {w.key: w.expected_version for w in writes},
            },
        )
        return BoardProposal(writes=writes, usage=usage)

    # -- shared plumbing -------------------------------------------------------------------

    async def _ask(
        self, agent: str, payload: BaseModel, wire: type[T], chosen: Route | None = None
    ) -> tuple[T, TokenUsage]:
        """Ask ``agent`` (governed, throttled, kill-switch checked). ``chosen``: a prompt and
        model picked by the caller (an auction winner's tier) instead of the version's route."""
        workflow_type = activity.info().workflow_type or ""
        process = PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type)
        version = str(getattr(payload, "version", STABLE_VERSION))
        if chosen is None:
            chosen = route(process, version, agent, self.model)
        system = chosen.prompt
        router = self.router
        if router is not None and agent in router.catalogue.agents:
            # The catalogue routes this agent by task class (activities/router.py): the router
            # asks policy, charges and audits each request itself (model_charge, not
            # agent_spend), so the call's own audit row carries no second charge.
            task_class = router.catalogue.agents[agent]
            out, routed = await router.ask(agent, task_class, system, payload, wire, route=chosen)
            return out, TokenUsage(
                model=routed.model,
                prompt_tokens=sum(c.prompt_tokens for c in routed.calls),
                completion_tokens=sum(c.completion_tokens for c in routed.calls),
                cost_usd=routed.cost_usd,
                run_tokens=routed.run_tokens,
                run_cost_usd=routed.run_cost_usd,
            )
        if self.switch is not None:  # engaged for this agent, tenant, process or globally?
            subject = Subject(
                process=process,
                agent=agent,
                tenant=str(getattr(payload, "tenant", "")),
            )
            await asyncio.to_thread(self.switch.raise_if_blocking, subject)
        governed = await self._govern(agent, system, payload, chosen)
        _GOVERNED.set(governed)
        if self.throttle is None:
            return await self._call(agent, system, governed, wire)
        keys = [f"agent:{agent}", f"model:{chosen.model}", f"tenant:{governed.tenant}"]
        async with self.throttle.slot(keys) as waited:  # excess calls wait, never fail
            governed = dataclasses.replace(governed, throttled_seconds=round(waited, 3))
            _GOVERNED.set(governed)
            return await self._call(agent, system, governed, wire)

    async def _call(
        self, agent: str, system: str, governed: GovernedCall, wire: type[T]
    ) -> tuple[T, TokenUsage]:
        """:meth:`_call_model` in a GenAI ``chat <model>`` span (activities/tracing.py)."""
        model = governed.route.model if governed.route is not None else self.model
        with tracing.agent_call_span(
            agent, model, str(self.client.base_url), tenant=governed.tenant
        ) as span:
            answer, usage = await self._call_model(agent, system, governed, wire)
            tracing.record_usage(span, usage)
            return answer, usage

    async def _call_model(
        self, agent: str, system: str, governed: GovernedCall, wire: type[T]
    ) -> tuple[T, TokenUsage]:
        model = governed.route.model if governed.route is not None else self.model
        request = chat_request(
            self.client, model, agent, system, governed.content, wire, self.timeout_seconds
        )
        try:
            response = await _heartbeating(request)
        except openai.APIStatusError as err:
            raise _map_status_error(agent, err) from err
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise ApplicationError(
                f"{agent}: model endpoint unreachable or timed out: {err}", type="LLMUnavailable"
            ) from err
        usage = TokenUsage(model=response.model or model)
        if response.usage is not None:
            usage = self._priced(
                usage.model, response.usage.prompt_tokens, response.usage.completion_tokens
            )
        content = response.choices[0].message.content if response.choices else None
        try:
            return wire.model_validate_json(content or ""), usage
        except ValidationError as err:
            raise _invalid_output(agent, err) from err

    async def _govern(
        self,
        agent: str,
        system: str,
        payload: BaseModel,
        chosen: Route,
        target: CallTarget | None = None,
    ) -> GovernedCall:
        """Ask the base policy about this call, audit the decision, apply its obligations.

        ``target`` is the endpoint the router chose (activities/router.py); without one, the
        worker's configured endpoint. Raises (and sends nothing) unless policy allows the call."""
        info = activity.info()
        tenant = str(getattr(payload, "tenant", "") or "")
        plain = payload.model_dump_json(exclude=NOT_SENT)
        now = datetime.now(UTC)
        day = spend.utc_day(now)
        spent = await asyncio.to_thread(spend.spent_on, self.ledger.db, tenant, day)
        estimate = self._estimate(system, plain) if target is None else target.estimate
        region = self.model_region if target is None else target.region
        query = PolicyQuery(
            policy=AGENT_CALL_POLICY,
            input=agent_call_policy_input(
                role=agent,
                tenant=tenant,
                endpoint=str(self.client.base_url) if target is None else target.endpoint,
                model=chosen.model,
                region=region,
                spent_today_usd=spent,
                estimated_cost_usd=estimate,
                now=now,
            ),
            subject=agent,
            workflow_id=info.workflow_id or "",
        )
        # One decision per attempt (and per routed request): a retry asks again, and every
        # answer is audited.
        call = "" if target is None else f"/{target.call_index}"
        decision_id = f"{info.workflow_id}/act/{info.activity_id}/llm/{info.attempt}{call}"
        if self.policy is None:
            decision = PolicyDecision(
                decision_id=decision_id,
                policy=AGENT_CALL_POLICY,
                verdict="deny",
                reasons=["no policy engine is configured for model calls"],
                revision=UNKNOWN_REVISION,
                engine="none",
                subject=agent,
            )
        else:
            decision = await decide(self.policy, query, decision_id)

        content, problem = plain, None
        redacted: dict[str, int] = {}
        kinds = decision.obligations.redact
        if decision.verdict == "allow" and kinds:
            try:
                document, redacted = redact_document(
                    payload.model_dump(mode="json", exclude=NOT_SENT),
                    kinds,
                    verbatim=VERBATIM_FIELDS,
                )
            except RedactionError as err:
                problem = str(err)
            else:
                content = json.dumps(document, ensure_ascii=False, separators=(",", ":"))

        event = activity_event(
            f"llm/policy/{info.attempt}{call}",
            actor=f"policy:{AGENT_CALL_POLICY}",
            action=f"policy.{decision.verdict}",
            detail={
                "subject": agent,
                "tenant": tenant,
                "action": LLM_CALL,
                "model": chosen.model,
                "model_region": region,
                "version": chosen.version,
                "reasons": decision.reasons,
                "revision": decision.revision,
                "engine": decision.engine,
                "redact": kinds,
                "redacted": redacted,
                "redaction_error": problem,
                "reroute_regions": decision.obligations.reroute_regions,
                "spent_today_usd": spent,
                "estimated_cost_usd": estimate,
            },
            decision_id=decision.decision_id,
            input_digest=digest(query.input),
        )
        await asyncio.to_thread(self.ledger.append, [event])
        if decision.verdict != "allow":
            raise _denied(agent, decision, self.policy)
        if problem is not None:
            raise ApplicationError(
                f"{agent}: {problem}", type="RedactionFailed", non_retryable=True
            )
        return GovernedCall(decision, tenant, day, content, redacted, route=chosen)

    def _estimate(self, system: str, content: str) -> float:
        """USD this call may cost: the prompt at ~4 characters a token, plus a full answer."""
        prompt = math.ceil((len(system) + len(content)) / 4)
        cost = prompt / 1000 * self.price_per_1k_prompt
        cost += ESTIMATED_COMPLETION_TOKENS / 1000 * self.price_per_1k_completion
        return round(cost, 6)

    def _priced(self, model: str, prompt: int, completion: int) -> TokenUsage:
        cost = prompt / 1000 * self.price_per_1k_prompt
        cost += completion / 1000 * self.price_per_1k_completion
        return TokenUsage(
            model=model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=round(cost, 8)
        )

    async def _audit(
        self,
        agent: str,
        action: str,
        inp: BaseModel,
        out: BaseModel,
        usage: TokenUsage,
        detail: dict[str, Any],
    ) -> None:
        governed = _GOVERNED.get()
        extra: dict[str, Any] = {}
        if governed is not None:
            # Which kinds were masked and how many, never the values; the digest of what was
            # actually sent lets an auditor tie the call to the redacted prompt.
            extra = {
                "tenant": governed.tenant,
                "policy": {
                    "decision_id": governed.decision.decision_id,
                    "revision": governed.decision.revision,
                    "engine": governed.decision.engine,
                },
                "redact": governed.decision.obligations.redact,
                "redacted": governed.redacted,
                "sent_digest": hashlib.sha256(governed.content.encode()).hexdigest(),
                "throttled_seconds": governed.throttled_seconds,
            }
            if governed.route is not None:
                extra["version"] = governed.route.version
                extra["prompt_variant"] = governed.route.variant
        event = activity_event(
            agent,
            actor=f"agent:{agent}",
            action=action,
            detail={**detail, "attempt": activity.info().attempt, **extra},
            decision_id=governed.decision.decision_id if governed else None,
            model=usage.model,
            tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
            input_digest=digest(inp),
            output_digest=digest(out),
        )
        if governed is None or governed.charged:
            await asyncio.to_thread(self.ledger.append, [event])
            return
        cost = spend.AgentSpend(
            tenant=governed.tenant,
            day=governed.day,
            workflow_id=event.workflow_id,
            run_id=event.run_id,
            seq=event.seq,
            agent=agent,
            cost_usd=usage.cost_usd,
        )

        def write() -> None:  # the call's audit row and its cost commit together
            with self.ledger.db.session() as session:
                self.ledger.append_in(session, [event])
                spend.record_in(session, cost)

        await asyncio.to_thread(write)


def _denied(agent: str, decision: PolicyDecision, engine: PolicyEngine | None) -> ApplicationError:
    """The error for a model call policy did not allow. An engine that did not answer is worth
    a retry (Temporal's, bounded by the agent preset; in wait mode the workflow's, see
    activities.policy.unavailable_error); a decision the policy made is not."""
    reasons = "; ".join(decision.reasons)
    if engine is not None and (waiting := unavailable_error(engine, [decision])) is not None:
        return waiting
    if is_unavailable(decision):
        return ApplicationError(
            f"{agent}: no model call without a policy decision: {reasons}",
            type=POLICY_UNAVAILABLE_ERROR,
        )
    if decision.verdict == "require_approval":
        reasons = f"it requires approval, which a model call cannot wait for ({reasons})"
    details = {
        "decision_id": decision.decision_id,
        "revision": decision.revision,
        "reroute_regions": decision.obligations.reroute_regions,
    }
    return ApplicationError(
        f"{agent}: policy {AGENT_CALL_POLICY} denied the model call: {reasons}",
        details,
        type="PolicyDenied",
        non_retryable=True,
    )


def _entries(agent: str, wire: _WireProposal) -> list[AdjustingEntry]:
    try:
        return [
            AdjustingEntry(
                entry_id=e.entry_id,
                account=e.account,
                amount=Decimal(e.amount),
                source_ids=e.source_ids,
                rationale=e.rationale,
            )
            for e in wire.entries
        ]
    except (ValidationError, ArithmeticError, ValueError) as err:
        raise _invalid_output(agent, err) from err


async def _heartbeating(call: Awaitable[T]) -> T:
    """Await ``call`` while heartbeating, so a cancellation or a dead worker is noticed."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_SECONDS)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()


def _map_status_error(agent: str, err: openai.APIStatusError) -> ApplicationError:
    status = err.status_code
    message = f"{agent}: model endpoint answered HTTP {status}: {_error_message(err)}"
    if status in RETRYABLE_STATUS or status >= 500:
        delay = _retry_after(err)
        return ApplicationError(
            message,
            type="LLMRateLimited" if status == 429 else "LLMServerError",
            next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
        )
    return ApplicationError(message, type="LLMRequestRejected", non_retryable=True)


def _retry_after(err: openai.APIStatusError) -> float | None:
    raw = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: let the retry policy's backoff decide


def _error_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(err.message)


def _invalid_output(agent: str, err: Exception) -> ApplicationError:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, ValidationError):
        first = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in err.errors()[:3]
        )
    return ApplicationError(
        f"{agent}: model answer is not valid for the schema ({first})",
        type="AgentOutputInvalid",
    )


__all__ = [
    "AGENT_CALL_POLICY",
    "AgentActivities",
    "BOARD_AGENT_KEYS",
    "COMPLIANCE_PROMPT",
    "CallTarget",
    "DEFAULT_MODEL_REGION",
    "ENTITLEMENT_PROMPTER_PROMPT",
    "ESTIMATED_COMPLETION_TOKENS",
    "GovernedCall",
    "HEARTBEAT_EVERY_SECONDS",
    "IDENTITY_VERIFIER_PROMPT",
    "LLM_CALL",
    "MEMO_PROMPT",
    "NOT_SENT",
    "POLICY_EDUCATOR_PROMPT",
    "POLICY_EDUCATOR_PROMPT_V2",
    "PROMPTS",
    "RECONCILER_PROMPT",
    "RECONCILER_PROMPT_V2",
    "RETRYABLE_STATUS",
    "REVISER_PROMPT",
    "Route",
    "VERBATIM_FIELDS",
    "agent_call_policy_input",
    "chat_request",
    "route",
]
