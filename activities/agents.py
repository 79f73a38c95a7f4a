"""LLM agents of the finance close, called through the real ``openai`` SDK.

Each agent is one activity: it sends a system prompt (activities/prompts/<role>.md) whose first
line names the agent and the agent's input as a JSON document, asks for a structured answer the
way the model's catalogue entry says its server takes it (activities/structured.py), parses it
into a pydantic wire model, checks its meaning (activities/answer_checks.py), and writes an audit
row with model, tokens, cost and digests (never the prompt or the answer themselves: the audit
ledger is the record, by digest, unless a later opt-in says so).

Retries belong to Temporal: the SDK client is built with ``max_retries=0`` (worker.py) so every
attempt is visible in the workflow history. Provider errors are mapped to ``ApplicationError``
types here: 408/409/429/5xx, timeouts and connection errors are retryable (``Retry-After``
becomes ``next_retry_delay``); other 4xx are not. An answer that is not JSON of the schema, or
fails its answer check, gets one repair turn (the problems fed back to the same model), then the
stronger tier (routed agents, activities/router.py), then the step fails with a non-retryable
``AgentOutputInvalid`` / ``AgentAnswerIncomplete``: another attempt would ask the same models the
same thing. Every refused answer has an audit row saying why.

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
registry ``PROCESS_VERSIONS`` in workflows/contracts/base.py). The version picks the prompt variant
(``PROMPTS``) and the model (a model route) per agent role; "stable" is the worker's configured
prompt and ``BATON_MODEL``. The version is never sent to the model; the call's audit row records
it with the model used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import answer_checks, spend, tracing
from activities.audit import AuditLedger, activity_event, decision_event
from activities.kill_switch import KillSwitch, Subject
from activities.policy import (
    POLICY_UNAVAILABLE_ERROR,
    UNKNOWN_REVISION,
    PolicyEngine,
    SyncPolicyEngine,
    decide,
    decide_sync,
    is_unavailable,
    unavailable_error,
)
from activities.prompts import PromptTable
from activities.redaction import RedactionError, redact_document
from activities.structured import (
    DECIMAL_PATTERN,
    RequestOptions,
    StructuredOutput,
    answer_text,
    parse_answer,
    request_kwargs,
    wire_schema,
)
from activities.throttle import EndpointSlots, Throttle
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

T = TypeVar("T", bound=BaseModel)


class Router(Protocol):
    """What the agents use of the model router (activities/router.py ``Router``), which builds
    on this module: named structurally here so the two modules do not import each other."""

    catalogue: Any
    timeout_seconds: float

    async def ask(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]: ...

    def client(self, spec: Any) -> AsyncOpenAI: ...


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
        "allowed_accounts", "source_id",
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
# keys, plain JSON types); amounts are decimal strings so no cent is lost to floats. The schema a
# model is sent is generated from these (activities/structured.py): the descriptions tell it what
# each field means and every closed set is a Literal, so constrained decoding can enforce it.
class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


Severity = Literal["info", "warning", "blocker"]


class _WireEntry(_Wire):
    entry_id: str = Field(
        description="'ADJ-' + the id of the item it adjusts, e.g. 'ADJ-B0042'; 'ADJ-DUP-' + "
        "the ledger id for a duplicate's reversal, e.g. 'ADJ-DUP-L0107'. Unique."
    )
    account: str = Field(description="Ledger account to post against, one of the allowed ones.")
    amount: str = Field(
        pattern=DECIMAL_PATTERN,
        description="Signed decimal amount as a string, e.g. '-12.50'; positive debits cash.",
    )
    source_ids: list[str] = Field(
        description="Ids of the bank lines / ledger entries from the input this entry explains."
    )
    rationale: str = Field(description="Why the entry is needed, naming the source ids.")


class _WireNoEntry(_Wire):
    source_id: str = Field(description="Id of a bank line / ledger entry from the input.")
    reason: str = Field(description="Why the books need no adjusting entry for it.")


class _WireProposal(_Wire):
    entries: list[_WireEntry] = Field(description="The adjusting entries.")
    no_entry_needed: list[_WireNoEntry] = Field(
        default=[],
        description="Items of the input that need no entry, each with the reason. Every "
        "unmatched bank line, unmatched ledger entry and duplicate is either cited by an entry "
        "or listed here.",
    )


class _WireFinding(_Wire):
    entry_id: str = Field(description="Id of one of the entries under review.")
    severity: Severity = Field(
        description="info: worth knowing; warning: needs a human look; blocker: must not post."
    )
    note: str = Field(description="What is wrong or notable, in one sentence.")


class _WireReview(_Wire):
    summary: str = Field(description="One paragraph: what was reviewed and what was found.")
    findings: list[_WireFinding] = Field(description="One finding per point of attention.")


class _WireMemo(_Wire):
    memo: str = Field(
        description="Plain-text close memo, at most 15 lines, stating the counts of the input."
    )


class _WireBoardWrite(_Wire):
    key: str = Field(description="Blackboard key to write: the agent's own key or 'checklist'.")
    items: list[str] = Field(description="The key's whole new value, one item per string.")
    reason: str = Field(description="Why this write, in one sentence.")


class _WireBoard(_Wire):
    writes: list[_WireBoardWrite] = Field(description="The agent's writes to the blackboard.")


def proposal_wire(accounts: tuple[str, ...]) -> type[BaseModel]:
    """The reconciler's wire model with ``account`` an enum of ``accounts`` (the allowed ones in
    policy data, read at call time): the schema a model is sent. The answer is still parsed
    with the open ``_WireProposal``: which accounts may be posted to is policy's call, audited
    with the account it refused."""
    return _proposal_wire(tuple(sorted(set(accounts))))


@functools.cache
def _proposal_wire(accounts: tuple[str, ...]) -> type[BaseModel]:
    if not accounts:
        return _WireProposal
    description = "Ledger account to post against, one of the allowed accounts."
    account: Any = Literal[accounts]  # a Literal of the allowed values: an enum in the schema
    entry = create_model(
        "_WireEntry", __base__=_WireEntry, account=(account, Field(description=description))
    )
    return create_model(
        "_WireProposal",
        __base__=_WireProposal,
        entries=(list[entry], Field(description="The adjusting entries.")),  # type: ignore[valid-type]
    )


@functools.cache
def _board_wire(keys: tuple[str, ...]) -> type[BaseModel]:
    """A blackboard agent's wire model with ``key`` an enum of the keys it may write."""
    key: Any = Literal[keys]
    write = create_model(
        "_WireBoardWrite",
        __base__=_WireBoardWrite,
        key=(key, Field(description="Blackboard key to write: the agent's own or 'checklist'.")),
    )
    return create_model(
        "_WireBoard",
        __base__=_WireBoard,
        writes=(list[write], Field(description="The agent's writes to the blackboard.")),  # type: ignore[valid-type]
    )


class _ReconcilerPayload(ProposeAdjustmentsInput):
    """What the reconciler model sees: the input plus the accounts policy allows (policy data,
    read at call time): the context its answer depends on."""

    allowed_accounts: list[str]


def allowed_accounts(policy_dir: str | Path) -> tuple[str, ...]:
    """The accounts the posting policy allows (policy data ``baton.finance.limits``), read at
    call time so the reconciler's schema and prompt follow a policy data change at once."""
    path = Path(policy_dir) / "data" / "finance_limits.json"
    try:
        limits = json.loads(path.read_text())["baton"]["finance"]["limits"]
        return tuple(str(a) for a in limits["allowed_accounts"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return ()


#: Prompt text by agent role and variant (activities/prompts/<role>[.<variant>].md, read on
#: first use); ProcessVersion.prompts names a variant per role.
PROMPTS: PromptTable = PromptTable(
    {
        "reconciler": [STABLE_VERSION, "v2"],
        "reviser": [STABLE_VERSION],
        "compliance_checker": [STABLE_VERSION],
        "close_memo_writer": [STABLE_VERSION],
        "identity_verifier": [STABLE_VERSION],
        "policy_educator": [STABLE_VERSION, "v2"],
        "entitlement_prompter": [STABLE_VERSION],
    }
)

#: Module constants of the prompts (older imports), read from the files on first access.
_PROMPT_CONSTANTS = {
    "RECONCILER_PROMPT": ("reconciler", STABLE_VERSION),
    "RECONCILER_PROMPT_V2": ("reconciler", "v2"),
    "REVISER_PROMPT": ("reviser", STABLE_VERSION),
    "COMPLIANCE_PROMPT": ("compliance_checker", STABLE_VERSION),
    "MEMO_PROMPT": ("close_memo_writer", STABLE_VERSION),
    "IDENTITY_VERIFIER_PROMPT": ("identity_verifier", STABLE_VERSION),
    "POLICY_EDUCATOR_PROMPT": ("policy_educator", STABLE_VERSION),
    "POLICY_EDUCATOR_PROMPT_V2": ("policy_educator", "v2"),
    "ENTITLEMENT_PROMPTER_PROMPT": ("entitlement_prompter", STABLE_VERSION),
}


def __getattr__(name: str) -> str:
    if name in _PROMPT_CONSTANTS:
        role, variant = _PROMPT_CONSTANTS[name]
        return PROMPTS[role][variant]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The blackboard agents of HR onboarding and the keys each may write (the shared checklist too).
BOARD_AGENT_KEYS: dict[str, frozenset[str]] = {
    "identity_verifier": frozenset({"identity", "checklist"}),
    "policy_educator": frozenset({"policies", "checklist"}),
    "entitlement_prompter": frozenset({"entitlements", "checklist"}),
}


@dataclass(frozen=True)
class _Asking:
    """What one agent call asks for: the prompt, the answer's wire model and check."""

    agent: str
    system: str
    wire: type[BaseModel]
    check: AnswerCheck | None = None
    schema_wire: type[BaseModel] | None = None


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
    schema: dict[str, Any],
    options: RequestOptions,
    repair: tuple[str, str] | None = None,
) -> Awaitable[Any]:
    """One chat completion asking ``agent`` for JSON of ``schema``, the way ``options`` say the
    model's server takes it (activities/structured.py): the request every agent call sends,
    routed (activities/router.py) or not. ``repair``: (refused answer, why): the repair turn."""
    return client.chat.completions.create(
        **request_kwargs(
            options,
            model=model,
            agent=agent,
            system=system,
            content=content,
            schema=schema,
            repair=repair,
        )
    )


#: ApplicationError types of a refused answer, after the repair turn and the escalation.
OUTPUT_INVALID = "AgentOutputInvalid"  # not JSON of the schema
ANSWER_INCOMPLETE = "AgentAnswerIncomplete"  # JSON of the schema, but wrong or incomplete

#: An answer check (activities/answer_checks.py): the problems of a parsed answer, [] if none.
AnswerCheck = Callable[[Any], list[str]]


@dataclass(frozen=True)
class Refusal:
    """Why an answer was refused: ``schema`` (not JSON of the schema) or ``meaning`` (the
    answer's content fails the agent's answer check)."""

    kind: Literal["schema", "meaning"]
    problems: list[str]

    @property
    def text(self) -> str:
        return "; ".join(self.problems)

    @property
    def note(self) -> str:
        """The audit row's note (ModelCall.note, the refused request's audit detail)."""
        return f"refused ({self.kind}): {self.text}"[:1000]

    def error(self, agent: str) -> ApplicationError:
        """The step's typed, non-retryable failure once repair and escalation did not help:
        another attempt would send the same input to the same models."""
        if self.kind == "schema":
            message = f"{agent}: model answer is not valid for the schema ({self.text})"
            kind = OUTPUT_INVALID
        else:
            message = f"{agent}: the answer was refused: {self.text}"
            kind = ANSWER_INCOMPLETE
        return ApplicationError(
            message, {"refused": self.kind, "problems": self.problems}, type=kind,
            non_retryable=True,
        )  # fmt: skip


def judge(
    text: str,
    wire: type[T],
    mode: StructuredOutput,
    check: AnswerCheck | None,
) -> tuple[T | None, Refusal | None]:
    """The answer parsed and checked: (answer, None), or (None, why it is refused)."""
    try:
        answer = parse_answer(text, wire, mode)
    except ValidationError as err:
        return None, Refusal("schema", _schema_problems(err))
    problems = check(answer) if check is not None else []
    if problems:
        return None, Refusal("meaning", problems)
    return answer, None


def _schema_problems(err: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()[:5]
    ]


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
        policy_dir: str | Path = "policy",
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
        #: How unrouted calls to a model the catalogue does not list are asked (OpenAI's way).
        self.options = RequestOptions(timeout_s=timeout_seconds)
        #: Worker-local concurrency per (endpoint, model): the catalogue's max_concurrency.
        self.slots = EndpointSlots()
        #: Policy data the reconciler's allowed accounts are read from (worker.py sets it).
        self.policy_dir: Path = Path(policy_dir)

    @activity.defn(name="propose_adjustments")
    async def propose_adjustments(self, inp: ProposeAdjustmentsInput) -> AdjustmentProposal:
        accounts = await asyncio.to_thread(allowed_accounts, self.policy_dir)
        payload = _ReconcilerPayload(**inp.model_dump(), allowed_accounts=list(accounts))
        return await self._ask_for_entries(
            "reconciler", "agent.proposed_adjustments", inp, payload,
            answer_checks.reconciler(inp), accounts,
        )  # fmt: skip

    @activity.defn(name="revise_adjustments")
    async def revise_adjustments(self, inp: ReviseAdjustmentsInput) -> AdjustmentProposal:
        accounts = await asyncio.to_thread(allowed_accounts, self.policy_dir)
        return await self._ask_for_entries(
            "reviser", "agent.revised_adjustments", inp, inp, answer_checks.reviser(inp),
            accounts, reviewer=inp.reviewer,
        )  # fmt: skip

    async def _ask_for_entries(
        self,
        agent: str,
        action: str,
        inp: BaseModel,
        payload: BaseModel,
        check: AnswerCheck,
        accounts: tuple[str, ...],
        **detail: Any,
    ) -> AdjustmentProposal:
        """Ask the reconciler or the reviser for adjusting entries on ``accounts`` (the schema
        allows no other) and audit the answer as ``action``: how many entries, the items it
        says need none (with the reason) and ``detail``."""
        wire, usage = await self._ask(
            agent, payload, _WireProposal, check=check, schema_wire=proposal_wire(accounts)
        )
        entries = _entries(agent, wire)
        no_entry_needed = {n.source_id: n.reason for n in wire.no_entry_needed}
        await self._audit(
            agent,
            action,
            inp,
            wire,
            usage,
            {"entries": len(entries), "no_entry_needed": no_entry_needed, **detail},
        )
        return AdjustmentProposal(entries=entries, usage=usage)

    @activity.defn(name="review_compliance")
    async def review_compliance(self, inp: ComplianceInput) -> ComplianceReview:
        check = answer_checks.compliance(e.entry_id for e in inp.entries)
        wire, usage = await self._ask("compliance_checker", inp, _WireReview, check=check)
        findings = [ComplianceFinding.model_validate(f.model_dump()) for f in wire.findings]
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
        check = answer_checks.memo(inp)
        wire, usage = await self._ask("close_memo_writer", inp, _WireMemo, check=check)
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
        allowed = BOARD_AGENT_KEYS[agent]
        own = next(k for k in sorted(allowed) if k != "checklist")
        check = answer_checks.board(inp, own, allowed)
        wire, usage = await self._ask(
            agent, inp, _WireBoard, check=check, schema_wire=_board_wire(tuple(sorted(allowed)))
        )
        writes = []
        for w in wire.writes:
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
        self,
        agent: str,
        payload: BaseModel,
        wire: type[T],
        chosen: Route | None = None,
        *,
        check: AnswerCheck | None = None,
        schema_wire: type[BaseModel] | None = None,
    ) -> tuple[T, TokenUsage]:
        """Ask ``agent`` (governed, throttled, kill-switch checked). ``chosen``: a prompt and
        model picked by the caller (an auction winner's tier) instead of the version's route.

        ``check``: the agent's answer check (activities/answer_checks.py); ``schema_wire``: the
        model whose schema is sent when it is narrower than ``wire`` (enums read at call time).
        A refused answer gets one repair turn, then (routed) the stronger tier, then the step
        fails with a non-retryable ``AgentOutputInvalid`` / ``AgentAnswerIncomplete``."""
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
            out, routed = await router.ask(
                agent, task_class, system, payload, wire, route=chosen, check=check,
                schema_wire=schema_wire,
            )  # fmt: skip
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
        target = self._catalogue_target(chosen.model, system, payload)
        governed = await self._govern(agent, system, payload, chosen, target)
        _GOVERNED.set(governed)
        ask = _Asking(agent, system, wire, check, schema_wire)
        if self.throttle is None:
            return await self._call(ask, governed, payload)
        keys = [f"agent:{agent}", f"model:{chosen.model}", f"tenant:{governed.tenant}"]
        async with self.throttle.slot(keys) as waited:  # excess calls wait, never fail
            governed = dataclasses.replace(governed, throttled_seconds=round(waited, 3))
            _GOVERNED.set(governed)
            return await self._call(ask, governed, payload)

    def _catalogue_target(self, model: str, system: str, payload: BaseModel) -> CallTarget | None:
        """Where an unrouted call goes: the catalogue's first entry of ``model`` if it lists
        one (its endpoint, region, price and request options), else the worker's endpoint."""
        spec = self.router.catalogue.spec_of(model) if self.router is not None else None
        if spec is None:
            return None
        content = payload.model_dump_json(exclude=NOT_SENT)
        prompt_tokens = math.ceil((len(system) + len(content)) / 4)
        estimate = spec.cost(prompt_tokens, min(spec.max_tokens, ESTIMATED_COMPLETION_TOKENS))
        return CallTarget(spec.endpoint, spec.region, estimate, 0)

    async def _call(
        self, ask: _Asking, governed: GovernedCall, payload: BaseModel
    ) -> tuple[T, TokenUsage]:
        """:meth:`_call_model` in a GenAI ``chat <model>`` span (activities/tracing.py)."""
        model = governed.route.model if governed.route is not None else self.model
        spec = self.router.catalogue.spec_of(model) if self.router is not None else None
        endpoint = spec.endpoint if spec is not None else str(self.client.base_url)
        with tracing.agent_call_span(ask.agent, model, endpoint, tenant=governed.tenant) as span:
            answer, usage = await self._call_model(ask, governed, payload)
            tracing.record_usage(span, usage)
            return answer, usage

    async def _call_model(
        self, ask: _Asking, governed: GovernedCall, payload: BaseModel
    ) -> tuple[Any, TokenUsage]:
        """The unrouted call: one request, and one repair turn if its answer is refused (each
        refused answer gets an audit row saying why); then the step fails, non-retryable."""
        agent = ask.agent
        model = governed.route.model if governed.route is not None else self.model
        spec = self.router.catalogue.spec_of(model) if self.router is not None else None
        options = (
            spec.options(self.router.timeout_seconds)
            if spec is not None and self.router is not None
            else self.options
        )
        client = self.router.client(spec) if spec is not None and self.router else self.client
        endpoint = spec.endpoint if spec is not None else str(self.client.base_url)
        schema = wire_schema(ask.schema_wire or ask.wire, pattern=options.schema_pattern)
        prompt_tokens = completion_tokens = 0
        repair: tuple[str, str] | None = None
        refusal: Refusal | None = None
        for turn in (1, 2):
            request = chat_request(
                client, model, agent, ask.system, governed.content, schema, options, repair
            )
            try:
                async with self.slots.slot(
                    endpoint, model, spec.max_concurrency if spec is not None else None
                ):
                    response = await _heartbeating(request)
            except openai.APIStatusError as err:
                raise _map_status_error(agent, err) from err
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                raise ApplicationError(
                    f"{agent}: model endpoint unreachable or timed out: {err}",
                    type="LLMUnavailable",
                ) from err
            used = response.usage
            if used is not None:
                prompt_tokens += used.prompt_tokens
                completion_tokens += used.completion_tokens
            text = answer_text(response, options.structured_output)
            answer, refusal = judge(text, ask.wire, options.structured_output, ask.check)
            if refusal is None:
                break
            tokens = used.total_tokens if used is not None else 0
            await self._refused(agent, payload, model, turn, refusal, tokens)
            repair = (text, refusal.text)
        if spec is not None:
            usage = TokenUsage(
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=spec.cost(prompt_tokens, completion_tokens),
            )
        else:
            usage = self._priced(response.model or model, prompt_tokens, completion_tokens)
        if refusal is not None:
            raise refusal.error(agent)
        return answer, usage

    async def _refused(
        self, agent: str, payload: BaseModel, model: str, turn: int, refusal: Refusal, tokens: int
    ) -> None:
        """The audit row of a refused answer (an unrouted call): why it was refused, and the
        tokens it took (the call's own audit row, if it succeeds, adds up every turn)."""
        info = activity.info()
        event = activity_event(
            f"{agent}/refused/{info.attempt}/{turn}",
            actor=f"agent:{agent}",
            action="agent.answer_refused",
            detail={
                "attempt": info.attempt,
                "turn": "repair" if turn > 1 else "first",
                "refused": refusal.kind,
                "note": refusal.note,
                "problems": refusal.problems,
            },
            model=model,
            tokens=tokens,
            input_digest=digest(payload),
        )
        await asyncio.to_thread(self.ledger.append, [event])

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
        estimate = self._estimate(system, plain) if target is None else target.estimate
        region = self.model_region if target is None else target.region
        # One decision per attempt (and per routed request): a retry asks again, and every
        # answer is audited.
        call = "" if target is None else f"/{target.call_index}"
        decision_id = f"{info.workflow_id}/act/{info.activity_id}/llm/{info.attempt}{call}"
        engine = self.policy

        def ask() -> tuple[float, PolicyQuery, PolicyDecision | None]:
            """The tenant's spend today and the query; an embedded engine decides here too
            (one worker-thread hop for both, not one each)."""
            spent = spend.spent_on(self.ledger.db, tenant, day)
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
            if isinstance(engine, SyncPolicyEngine):
                return spent, query, decide_sync(engine, query, decision_id)
            return spent, query, None

        spent, query, decided = await asyncio.to_thread(ask)
        if decided is not None:
            decision = decided
        elif engine is None:
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
            decision = await decide(engine, query, decision_id)

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

        event = decision_event(
            f"llm/policy/{info.attempt}{call}",
            decision,
            {
                "subject": agent,
                "tenant": tenant,
                "action": LLM_CALL,
                "model": chosen.model,
                "model_region": region,
                "version": chosen.version,
            },
            input_digest=digest(query.input),
            actor=f"policy:{AGENT_CALL_POLICY}",
            after={
                "redact": kinds,
                "redacted": redacted,
                "redaction_error": problem,
                "reroute_regions": decision.obligations.reroute_regions,
                "spent_today_usd": spent,
                "estimated_cost_usd": estimate,
            },
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
            agent=agent,
            cost_usd=usage.cost_usd,
            # keyed like the audit row, so a retried write of the same call changes nothing
            **event.model_dump(include={"workflow_id", "run_id", "seq"}),
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
    """The answer's entries as contracts (the contract parses the wire's decimal string)."""
    try:
        return [AdjustingEntry(**e.model_dump()) for e in wire.entries]
    except ValidationError as err:
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
    "ANSWER_INCOMPLETE",
    "AgentActivities",
    "AnswerCheck",
    "BOARD_AGENT_KEYS",
    "CallTarget",
    "DEFAULT_MODEL_REGION",
    "ESTIMATED_COMPLETION_TOKENS",
    "GovernedCall",
    "HEARTBEAT_EVERY_SECONDS",
    "LLM_CALL",
    "NOT_SENT",
    "OUTPUT_INVALID",
    "PROMPTS",
    "RETRYABLE_STATUS",
    "Refusal",
    "Route",
    "Router",
    "Severity",
    "VERBATIM_FIELDS",
    "agent_call_policy_input",
    "allowed_accounts",
    "chat_request",
    "judge",
    "proposal_wire",
    "route",
]
