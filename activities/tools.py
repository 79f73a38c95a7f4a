"""Tools agents may call, declared once, and the activities that run them under policy.

* :class:`ToolSpec`: a tool's name, description, argument model (its JSON schema is what the
  model sees), whether it has side effects, the tool that compensates it, the policy it asks and
  its timeout. A tool either reads (``read``: async) or writes in the database transaction Baton
  opens for it (``write``: sync, gets the session), so its effect, its idempotency key, policy's
  decision and the audit rows commit together or not at all.
* :class:`ToolRegistry`: the tools a worker offers. Built-in tools register with
  :meth:`ToolRegistry.register`; a toolset discovered at run time (an MCP server) registers with
  :meth:`ToolRegistry.register_toolset` ``(name, list_tools, call)`` and its tools run through the
  very same activity.
* :class:`ToolActivities`: ``call_tool`` (validate the arguments, ask policy, run the tool once
  per idempotency key, store the tool message in the payload store, audit) and ``undo_tool``
  (a compensation: idempotent, a no-op when the call never took effect).

Built-in tools act on Baton's own data: knowledge search (activities/knowledge.py), customer
lookup (support tickets, credits), contract lookup (the CRM's relation store), internal notes,
a reply draft, a credit proposal (a row in ``customer_credit``) with its reversal, and an email
to a customer (the ``customer_email`` outbox).

Must not: be imported by workflows (it does I/O); decide policy itself (policy/base/tool_call.rego
does).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as Arg
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditLedger, activity_event
from activities.claims import claim_or_check
from activities.database import Database, from_cents, to_cents, utcnow
from activities.kill_switch import KillSwitch, Subject
from activities.payload_store import PayloadStore
from activities.policy import PolicyEngine
from activities.policy_gate import GovernedWrites
from activities.store_base import StoredOutcome, stored_outcome
from workflows.contracts import PolicyDecision, PolicyQuery, digest
from workflows.contracts.tools import (
    TOOL_CALL_POLICY,
    PayloadRef,
    ToolCallInput,
    ToolCallOutcome,
    ToolPrincipal,
    ToolResult,
    ToolSchema,
    UndoToolInput,
    UndoToolOutcome,
)

#: ApplicationError type of a call naming no tool the worker has.
UNKNOWN_TOOL = "UnknownTool"


@dataclass(frozen=True)
class ToolContext:
    """What a running tool may use: who calls it, under which key, and Baton's stores."""

    principal: ToolPrincipal
    idempotency_key: str
    workflow_id: str
    db: Database
    tools: ToolActivities
    #: policy asked from inside the tool's transaction (a tool whose effect asks its own policy)
    decide: Callable[[PolicyQuery], PolicyDecision] | None = None

    def effect_id(self, prefix: str) -> str:
        """The id of the row this call writes: derived from the call's key, so the same on
        every retry."""
        return f"{prefix}-{uuid.uuid5(uuid.NAMESPACE_URL, self.idempotency_key).hex[:12]}"

    def effect_columns(self) -> dict[str, Any]:
        """The :class:`ToolEffectRow` columns of the row this call writes."""
        return {"tenant": self.principal.tenant, "call_key": self.idempotency_key}


ReadTool = Callable[[ToolContext, Any], Awaitable[ToolResult]]
WriteTool = Callable[[ToolContext, Session, Any], ToolResult]


@dataclass(frozen=True)
class ToolSpec:
    """One tool, declared once: what the model sees, how it runs, how it is undone.

    ``arguments`` is a pydantic model (validated before policy is asked, so an approver never
    sees arguments that cannot run); a tool from a toolset without one gives ``parameters`` (a
    JSON schema) instead. ``compensation`` names the tool that undoes a call: it is called with
    ``{"call_key": <the call's idempotency key>}`` and must be a no-op for a call that never
    took effect."""

    name: str
    description: str
    arguments: type[BaseModel] | None = None
    side_effects: bool = False
    compensation: str | None = None
    policy: str = TOOL_CALL_POLICY
    timeout_seconds: float = 30.0
    #: the argument holding an amount moved (the run's history sums it for policy)
    amount_argument: str | None = None
    read: ReadTool | None = None
    write: WriteTool | None = None
    parameters: dict[str, Any] | None = None
    toolset: str = "builtin"

    def schema(self) -> ToolSchema:
        if self.arguments is not None:
            params = self.arguments.model_json_schema()
        else:
            params = self.parameters or {"type": "object", "properties": {}}
        return ToolSchema(name=self.name, description=self.description, parameters=params)

    def validate(self, arguments: dict[str, Any]) -> Any:
        """The typed arguments; ``ToolArgumentsInvalid`` names each bad field."""
        if self.arguments is None:
            required = (self.parameters or {}).get("required", [])
            missing = [r for r in required if r not in arguments]
            if missing:
                raise ToolArgumentsInvalid(
                    f"arguments of '{self.name}': missing required field(s) {', '.join(missing)}"
                )
            return arguments
        try:
            return self.arguments.model_validate(arguments)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in err.errors()
            )
            raise ToolArgumentsInvalid(f"arguments of '{self.name}': {problems}") from None


class ToolArgumentsInvalid(ValueError):
    """A call's arguments do not fit the tool's argument model (the message names the fields)."""


class UnknownToolError(LookupError):
    """No tool of this name is registered."""


ListTools = Callable[[], Awaitable[Sequence[ToolSpec]]]
CallTool = Callable[[ToolContext, str, dict[str, Any]], Awaitable[ToolResult]]


@dataclass
class _Toolset:
    name: str
    list_tools: ListTools
    call: CallTool
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    loaded: bool = False


class ToolRegistry:
    """The tools one worker offers, by name (unique across built-ins and toolsets)."""

    def __init__(self, tools: Iterable[ToolSpec] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._toolsets: dict[str, _Toolset] = {}
        for spec in tools:
            self.register(spec)

    def register(self, spec: ToolSpec) -> None:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is registered twice")
        if (spec.read is None) == (spec.write is None):
            raise ValueError(f"tool {spec.name!r} needs exactly one of read or write")
        if spec.write is not None and not spec.side_effects:
            raise ValueError(f"tool {spec.name!r} writes: declare side_effects=True")
        self._tools[spec.name] = spec

    def register_toolset(self, name: str, list_tools: ListTools, call: CallTool) -> None:
        """Add a toolset discovered at run time (e.g. an MCP server): ``list_tools()`` returns
        its ToolSpecs (``read``/``write`` unset: ``call(ctx, tool, arguments)`` runs them)."""
        if name in self._toolsets:
            raise ValueError(f"toolset {name!r} is registered twice")
        self._toolsets[name] = _Toolset(name, list_tools, call)

    async def load(self) -> None:
        """List every toolset's tools (once; a toolset that fails is retried on next use)."""
        for ts in self._toolsets.values():
            if ts.loaded:
                continue
            specs = await ts.list_tools()
            for spec in specs:
                if spec.name in self._tools:
                    raise ValueError(f"toolset {ts.name!r}: tool {spec.name!r} already exists")
            ts.tools = {s.name: s for s in specs}
            ts.loaded = True

    def find(self, name: str) -> tuple[ToolSpec, CallTool | None]:
        if name in self._tools:
            return self._tools[name], None
        for ts in self._toolsets.values():
            if name in ts.tools:
                return ts.tools[name], ts.call
        raise UnknownToolError(
            f"unknown tool {name!r}; this worker offers: {', '.join(self.names()) or 'none'}"
        )

    def get(self, name: str) -> ToolSpec:
        return self.find(name)[0]

    def names(self) -> list[str]:
        found = list(self._tools)
        for ts in self._toolsets.values():
            found += list(ts.tools)
        return sorted(found)

    def schemas(self, names: Iterable[str]) -> list[ToolSchema]:
        return [self.get(n).schema() for n in names]


# ---------------------------------------------------------------------------------------------
# Tables: the record of every call (its key) and the built-in tools' systems of record
# ---------------------------------------------------------------------------------------------


class ToolCallRecord(StoredOutcome, table=True):
    """One tool call's idempotency key and stored outcome: a retry returns it, runs nothing."""

    __tablename__ = "tool_call"
    workflow_id: str = Field(index=True)
    tool: str
    verdict: str
    created_at: datetime = Field(default_factory=utcnow)


class ToolEffectRow(SQLModel):
    """The columns every row a built-in write tool adds to its system of record has: the tenant
    and the key of the call that wrote it (unique: a retried call adds nothing, and the call's
    compensation finds the row by it), see :meth:`ToolContext.effect_columns`."""

    tenant: str = Field(index=True)
    call_key: str = Field(unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class CustomerCredit(ToolEffectRow, table=True):
    """A credit proposed to a customer by an agent (reversed by its compensation)."""

    __tablename__ = "customer_credit"
    credit_id: str = Field(primary_key=True)
    customer: str = Field(index=True)
    case_id: str
    amount_cents: int
    reason: str
    proposed_by: str
    reversed_at: datetime | None = None


class CustomerEmail(ToolEffectRow, table=True):
    """The outbox of emails agents send to customers."""

    __tablename__ = "customer_email"
    email_id: str = Field(primary_key=True)
    customer: str = Field(index=True)
    subject: str
    body: str


class ReplyDraft(ToolEffectRow, table=True):
    """A reply drafted by an agent for a human to send (or not)."""

    __tablename__ = "reply_draft"
    draft_id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    text: str


def credits_of(db: Database, tenant: str, customer: str | None = None) -> list[CustomerCredit]:
    with db.read_session() as session:
        q = select(CustomerCredit).where(CustomerCredit.tenant == tenant)
        if customer is not None:
            q = q.where(CustomerCredit.customer == customer)
        return list(session.exec(q.order_by(col(CustomerCredit.created_at))).all())


def emails_of(db: Database, tenant: str) -> list[CustomerEmail]:
    with db.read_session() as session:
        q = select(CustomerEmail).where(CustomerEmail.tenant == tenant)
        return list(session.exec(q).all())


def tool_calls_of(db: Database, workflow_id: str) -> list[ToolCallRecord]:
    with db.read_session() as session:
        q = select(ToolCallRecord).where(ToolCallRecord.workflow_id == workflow_id)
        return list(session.exec(q).all())


# ---------------------------------------------------------------------------------------------
# Built-in tools
# ---------------------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchKnowledgeArgs(_Args):
    query: str = Arg(min_length=1, max_length=2000, description="What to look for.")
    k: int = Arg(default=3, ge=1, le=10, description="How many passages.")


class CustomerArgs(_Args):
    customer: str = Arg(min_length=1, max_length=120, description="The customer's id.")


class DraftReplyArgs(_Args):
    case_id: str = Arg(min_length=1, max_length=120)
    text: str = Arg(min_length=1, max_length=4000, description="The reply to the customer.")


class ProposeCreditArgs(_Args):
    customer: str = Arg(min_length=1, max_length=120)
    case_id: str = Arg(min_length=1, max_length=120)
    amount_usd: float = Arg(gt=0, le=1_000_000, description="Credit in USD.")
    currency: Literal["USD"] = Arg(
        default="USD", description="The credit's currency: USD (policy's limits are in USD)."
    )
    reason: str = Arg(min_length=1, max_length=500)


class SendEmailArgs(_Args):
    customer: str = Arg(min_length=1, max_length=120)
    subject: str = Arg(min_length=1, max_length=200)
    body: str = Arg(min_length=1, max_length=4000)


class UndoArgs(_Args):
    call_key: str = Arg(min_length=1, description="The idempotency key of the call to undo.")


async def _search_knowledge(ctx: ToolContext, args: SearchKnowledgeArgs) -> ToolResult:
    kb = ctx.tools.knowledge
    if kb is None:
        return ToolResult(text="the knowledge layer is not configured", is_error=True)
    from workflows.contracts.knowledge import KnowledgeQuery

    result = await kb.search(
        KnowledgeQuery(
            tenant=ctx.principal.tenant,
            query=args.query,
            k=args.k,
            requested_by=f"agent:{ctx.principal.agent}",
        ),
        audit_key=(ctx.workflow_id, "", f"tool/{ctx.idempotency_key}/knowledge"),
    )
    passages = [
        {"passage_id": f"{h.doc_id}#{h.chunk}", "source": h.provenance.source, "text": h.text}
        for h in result.hits
    ]
    text = "\n".join(f"[{p['passage_id']}] {p['text']}" for p in passages) or "no passages found"
    return ToolResult(text=text, data={"passage_ids": [p["passage_id"] for p in passages]})


async def _lookup_customer(ctx: ToolContext, args: CustomerArgs) -> ToolResult:
    def read() -> ToolResult:
        from activities.support import SupportTicket

        with ctx.db.read_session() as session:
            tickets = session.exec(
                select(SupportTicket).where(
                    SupportTicket.tenant == ctx.principal.tenant,
                    SupportTicket.customer == args.customer,
                )
            ).all()
            credits = session.exec(
                select(CustomerCredit).where(
                    CustomerCredit.tenant == ctx.principal.tenant,
                    CustomerCredit.customer == args.customer,
                    CustomerCredit.reversed_at.is_(None),  # type: ignore[union-attr]
                )
            ).all()
        open_credit = sum((from_cents(c.amount_cents) for c in credits), from_cents(0))
        data = {
            "customer": args.customer,
            "tickets": [{"case_id": t.case_id, "status": t.status} for t in tickets],
            "credits": len(credits),
            "credit_usd": f"{open_credit:.2f}",
        }
        return ToolResult(text=json.dumps(data, sort_keys=True), data=data)

    return await asyncio.to_thread(read)


async def _lookup_contract(ctx: ToolContext, args: CustomerArgs) -> ToolResult:
    """The customer's contracts from the CRM's relation store (customer -> account -> contract,
    activities/knowledge.py), found by entity id or by name."""

    def read() -> ToolResult:
        from activities.knowledge import KnowledgeEntityRow, KnowledgeStore

        tenant, wanted = ctx.principal.tenant, args.customer.strip().lower()
        with ctx.db.read_session() as session:
            customers = session.exec(
                select(KnowledgeEntityRow).where(
                    KnowledgeEntityRow.tenant == tenant, KnowledgeEntityRow.kind == "customer"
                )
            ).all()
        found = next(
            (
                c
                for c in sorted(customers, key=lambda c: c.entity_id)
                if wanted in (c.entity_id.lower(), c.name.lower())
                or c.name.lower().startswith(f"{wanted} ")
            ),
            None,
        )
        if found is None:
            data: dict[str, Any] = {"customer": args.customer, "contracts": []}
            return ToolResult(
                text=f"no customer {args.customer!r} in the CRM: no contract on record", data=data
            )
        tree = KnowledgeStore(ctx.db).related(tenant, found.entity_id)
        contracts = [
            {"contract_id": c.entity_id, "name": c.name, "source": c.source, **c.attributes}
            for c in tree.of_kind("contract")
        ]
        data = {
            "customer": found.entity_id,
            "name": found.name,
            "segment": found.attributes.get("segment"),
            "contracts": contracts,
        }
        return ToolResult(text=json.dumps(data, sort_keys=True), data=data)

    return await asyncio.to_thread(read)


async def _read_internal_notes(ctx: ToolContext, args: CustomerArgs) -> ToolResult:
    return ToolResult(
        text=f"internal notes on {args.customer}: escalated twice last quarter; "
        "account manager considers churn risk high (internal only, never share)",
        data={"customer": args.customer, "internal": True},
    )


def _draft_reply(ctx: ToolContext, session: Session, args: DraftReplyArgs) -> ToolResult:
    draft_id = ctx.effect_id("draft")
    session.add(
        ReplyDraft(**ctx.effect_columns(), draft_id=draft_id, case_id=args.case_id, text=args.text)
    )
    return ToolResult(
        text=f"draft {draft_id} saved for {args.case_id}", data={"draft_id": draft_id}
    )


def _propose_credit(ctx: ToolContext, session: Session, args: ProposeCreditArgs) -> ToolResult:
    credit_id = ctx.effect_id("cr")
    cents = to_cents(from_cents(round(args.amount_usd * 100)))
    session.add(
        CustomerCredit(
            **ctx.effect_columns(),
            credit_id=credit_id,
            customer=args.customer,
            case_id=args.case_id,
            amount_cents=cents,
            reason=args.reason,
            proposed_by=f"agent:{ctx.principal.agent}",
        )
    )
    return ToolResult(
        text=f"credit {credit_id} of {from_cents(cents)} USD proposed to {args.customer}",
        data={"credit_id": credit_id, "amount_usd": f"{from_cents(cents)}"},
    )


def _reverse_credit(ctx: ToolContext, session: Session, args: UndoArgs) -> ToolResult:
    row = session.exec(
        select(CustomerCredit).where(CustomerCredit.call_key == args.call_key)
    ).first()
    if row is None:
        return ToolResult(text="no credit was proposed by that call: nothing to reverse")
    if row.reversed_at is not None:
        return ToolResult(text=f"credit {row.credit_id} was already reversed")
    row.reversed_at = utcnow()
    session.add(row)
    return ToolResult(text=f"credit {row.credit_id} reversed", data={"credit_id": row.credit_id})


def _send_customer_email(ctx: ToolContext, session: Session, args: SendEmailArgs) -> ToolResult:
    email_id = ctx.effect_id("em")
    session.add(
        CustomerEmail(
            **ctx.effect_columns(),
            email_id=email_id,
            customer=args.customer,
            subject=args.subject,
            body=args.body,
        )
    )
    return ToolResult(
        text=f"email {email_id} queued to {args.customer}", data={"email_id": email_id}
    )


def builtin_tools() -> list[ToolSpec]:
    """The built-in tools (their policy data: policy/data/tools.json)."""
    return [
        ToolSpec(
            "search_knowledge",
            "Search the tenant's knowledge base; answers passages with their passage_id.",
            SearchKnowledgeArgs,
            read=_search_knowledge,
        ),
        ToolSpec(
            "lookup_customer",
            "Look a customer up: their support tickets and open credits.",
            CustomerArgs,
            read=_lookup_customer,
        ),
        ToolSpec(
            "lookup_contract",
            "Look a customer's contracts up in the CRM (plan, annual value, term), by customer "
            "id or name.",
            CustomerArgs,
            read=_lookup_contract,
        ),
        ToolSpec(
            "read_internal_notes",
            "Read the account team's internal notes on a customer (never to be shared).",
            CustomerArgs,
            read=_read_internal_notes,
        ),
        ToolSpec(
            "draft_reply",
            "Save a draft reply to a case for a human to review.",
            DraftReplyArgs,
            side_effects=True,
            write=_draft_reply,
        ),
        ToolSpec(
            "propose_credit",
            "Propose a credit (USD) to a customer for a case; large credits need approval.",
            ProposeCreditArgs,
            side_effects=True,
            compensation="reverse_credit",
            amount_argument="amount_usd",
            write=_propose_credit,
        ),
        ToolSpec(
            "reverse_credit",
            "Reverse the credit a propose_credit call made (the compensation).",
            UndoArgs,
            side_effects=True,
            write=_reverse_credit,
        ),
        ToolSpec(
            "email_customer",
            "Send an email to a customer (always approved by a human first).",
            SendEmailArgs,
            side_effects=True,
            write=_send_customer_email,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# The activities
# ---------------------------------------------------------------------------------------------


def tool_policy_input(inp: ToolCallInput) -> dict[str, Any]:
    """The exact input document tool policy sees (policy/base/tool_call.rego)."""
    return {
        "tool": inp.tool,
        "arguments": inp.arguments,
        "principal": {
            "process": inp.principal.process,
            "tenant": inp.principal.tenant,
            "agent": inp.principal.agent,
            "role": inp.principal.agent,
            "requested_by": inp.principal.requested_by,
        },
        "history": inp.history.model_dump(mode="json"),
        "approval": inp.approval.model_dump(mode="json") if inp.approval else None,
    }


def tool_message(call_id: str, text: str) -> dict[str, Any]:
    """The ``tool`` message answering one call (OpenAI chat format)."""
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def denial_text(decision: PolicyDecision) -> str:
    return f"policy denied this call: {'; '.join(decision.reasons) or 'no reason given'}"


class ToolActivities(GovernedWrites):
    """``call_tool`` and ``undo_tool``. Built once in worker.py. A governed writer: a call asks
    policy (and the kill switch) inside the transaction that records it."""

    def __init__(
        self,
        registry: ToolRegistry,
        db: Database,
        ledger: AuditLedger,
        policy: PolicyEngine,
        payloads: PayloadStore,
        switch: KillSwitch | None = None,
        knowledge: Any = None,
    ) -> None:
        super().__init__(db, ledger, policy, switch)
        self.registry = registry
        self.payloads = payloads
        self.knowledge = knowledge  # activities.knowledge.KnowledgeBase, for search_knowledge

    @activity.defn(name="call_tool")
    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutcome:
        """Run one tool call if, and only if, policy allows it now; once per idempotency key."""
        await self.registry.load()
        try:
            spec, external = self.registry.find(inp.tool)
        except UnknownToolError as err:
            raise ApplicationError(str(err), type=UNKNOWN_TOOL, non_retryable=True) from None
        info = activity.info()
        decide_now = self.decider(f"tool/{info.attempt}")
        ctx = ToolContext(
            inp.principal,
            inp.idempotency_key,
            info.workflow_id or "",
            self.db,
            self,
            self.decider(f"tool/{info.attempt}/effect"),
        )
        try:
            args = spec.validate(inp.arguments)
        except ToolArgumentsInvalid as err:
            return await asyncio.to_thread(self._invalid, inp, str(err))
        if spec.write is not None:
            return await asyncio.to_thread(self._transact, inp, spec, args, ctx, decide_now)
        decided = await asyncio.to_thread(self._decide, inp, spec, decide_now)
        if isinstance(decided, ToolCallOutcome):
            return decided
        started = time.perf_counter()
        try:
            if external is not None:
                result = await asyncio.wait_for(
                    external(ctx, inp.tool, inp.arguments), spec.timeout_seconds
                )
            else:
                assert spec.read is not None
                result = await asyncio.wait_for(spec.read(ctx, args), spec.timeout_seconds)
        except TimeoutError:
            result = ToolResult(
                text=f"'{inp.tool}' did not answer within {spec.timeout_seconds:g} s",
                is_error=True,
            )
        tool_ms = (time.perf_counter() - started) * 1000
        return await asyncio.to_thread(self._record, inp, decided, result, tool_ms)

    # -- one transaction per step -----------------------------------------------------------

    def _stored(self, session: Session, key: str) -> ToolCallOutcome | None:
        return stored_outcome(session, ToolCallRecord, key, ToolCallOutcome)

    def _check_switch(self, inp: ToolCallInput, session: Session) -> None:
        if self.switch is not None:
            subject = Subject(
                process=inp.principal.process,
                agent=inp.principal.agent,
                tenant=inp.principal.tenant,
            )
            self.switch.raise_if_blocking(subject, session)

    def _policy_event(self, inp: ToolCallInput, decision: PolicyDecision) -> Any:
        return activity_event(
            "tool/policy",
            actor=f"policy:{decision.policy}",
            action=f"policy.{decision.verdict}",
            detail={
                "subject": inp.tool,
                "call_id": inp.call_id,
                "agent": inp.principal.agent,
                "reasons": decision.reasons,
                "revision": decision.revision,
                "arguments_digest": digest(inp.arguments),
                "approval": inp.approval.model_dump(mode="json") if inp.approval else None,
            },
            decision_id=decision.decision_id,
            input_digest=digest(tool_policy_input(inp)),
        )

    def _query(self, inp: ToolCallInput, spec: ToolSpec) -> PolicyQuery:
        return PolicyQuery(
            policy=spec.policy,
            input=tool_policy_input(inp),
            subject=inp.tool,
            workflow_id=activity.info().workflow_id or "",
        )

    def _finish(
        self,
        session: Session,
        inp: ToolCallInput,
        decision: PolicyDecision,
        result: ToolResult | None,
        tool_ms: float,
        events: list[Any],
    ) -> ToolCallOutcome:
        """Store the tool message and the call's record, write the audit rows (the caller's
        transaction)."""
        message: PayloadRef | None = None
        if result is not None:
            text = result.text if not result.is_error else f"error: {result.text}"
            message = self.payloads.put_in(session, tool_message(inp.call_id, text))
        elif decision.verdict == "deny":
            message = self.payloads.put_in(
                session, tool_message(inp.call_id, denial_text(decision))
            )
        outcome = ToolCallOutcome(
            decision=decision,
            ran=result is not None,
            is_error=bool(result and result.is_error),
            message=message,
            data=result.data if result is not None else None,
            tool_ms=round(tool_ms, 3),
        )
        if result is not None:
            events.append(
                activity_event(
                    "tool/result",
                    actor=f"agent:{inp.principal.agent}",
                    action="tool.error" if result.is_error else "tool.called",
                    detail={
                        "tool": inp.tool,
                        "call_id": inp.call_id,
                        "idempotency_key": inp.idempotency_key,
                        "arguments_digest": digest(inp.arguments),
                        "result_digest": message.digest if message else None,
                        "approved_by": inp.approval.approvers if inp.approval else None,
                        "tool_ms": round(tool_ms, 3),
                    },
                    decision_id=decision.decision_id,
                    input_digest=digest(inp.arguments),
                    output_digest=message.digest if message else None,
                )
            )
        if decision.verdict != "require_approval":  # a held call runs again under its key
            session.add(
                ToolCallRecord.of(
                    inp.idempotency_key,
                    outcome,
                    workflow_id=activity.info().workflow_id or "",
                    tool=inp.tool,
                    verdict=decision.verdict,
                )
            )
        self.ledger.append_in(session, events)
        return outcome

    def _invalid(self, inp: ToolCallInput, problem: str) -> ToolCallOutcome:
        """Arguments that do not fit the tool: no policy asked, the model is told why."""
        decision = PolicyDecision(
            decision_id=f"{activity.info().workflow_id}/act/{activity.info().activity_id}/args",
            policy="baton/tool_arguments",
            verdict="deny",
            reasons=[problem],
            revision="n/a",
            engine="pydantic",
            subject=inp.tool,
        )
        with self.db.session() as session:
            stored = self._stored(session, inp.idempotency_key)
            if stored is not None:
                return stored
            return self._finish(session, inp, decision, None, 0.0, [])

    def _transact(
        self,
        inp: ToolCallInput,
        spec: ToolSpec,
        args: Any,
        ctx: ToolContext,
        decide_now: Callable[[PolicyQuery], PolicyDecision],
    ) -> ToolCallOutcome:
        """A side-effecting built-in: key, kill switch, policy, effect, result, audit: one
        transaction (a worker killed anywhere in it leaves nothing; a retry finds the key)."""
        with self.db.session() as session:
            stored = self._stored(session, inp.idempotency_key)
            if stored is not None:
                return stored
            self._check_switch(inp, session)
            decision = decide_now(self._query(inp, spec))
            events = [self._policy_event(inp, decision)]
            result: ToolResult | None = None
            started = time.perf_counter()
            if decision.verdict == "allow":
                assert spec.write is not None
                self._claim(session, inp)  # with the effect: another run's key writes nothing
                result = spec.write(ctx, session, args)
            tool_ms = (time.perf_counter() - started) * 1000
            return self._finish(session, inp, decision, result, tool_ms, events)

    def _decide(
        self,
        inp: ToolCallInput,
        spec: ToolSpec,
        decide_now: Callable[[PolicyQuery], PolicyDecision],
    ) -> ToolCallOutcome | PolicyDecision:
        """A reading (or external) tool: policy first (its own transaction); the stored
        outcome of a call already made, or the decision to act on."""
        with self.db.session() as session:
            stored = self._stored(session, inp.idempotency_key)
            if stored is not None:
                return stored
            self._check_switch(inp, session)
            decision = decide_now(self._query(inp, spec))
            if decision.verdict == "allow":
                if spec.side_effects:  # an external effect: claimed before it is made
                    self._claim(session, inp)
                self.ledger.append_in(session, [self._policy_event(inp, decision)])
                return decision
            return self._finish(
                session, inp, decision, None, 0.0, [self._policy_event(inp, decision)]
            )

    @staticmethod
    def _claim(session: Session, inp: ToolCallInput) -> None:
        info = activity.info()
        claim_or_check(session, inp.claim, info.workflow_id or "", info.workflow_run_id or "")

    def _record(
        self, inp: ToolCallInput, decision: PolicyDecision, result: ToolResult, tool_ms: float
    ) -> ToolCallOutcome:
        with self.db.session() as session:
            stored = self._stored(session, inp.idempotency_key)
            if stored is not None:  # an external tool that ran twice: the first answer stands
                return stored
            return self._finish(session, inp, decision, result, tool_ms, [])

    @activity.defn(name="undo_tool")
    async def undo_tool(self, inp: UndoToolInput) -> UndoToolOutcome:
        """Run ``inp.tool`` (a compensation) for the call keyed ``inp.call_key``; idempotent."""
        await self.registry.load()
        spec, external = self.registry.find(inp.tool)
        info = activity.info()
        key = f"undo/{inp.call_key}"
        ctx = ToolContext(inp.principal, key, info.workflow_id or "", self.db, self)
        args = spec.validate({"call_key": inp.call_key})
        if spec.write is None:
            assert external is not None or spec.read is not None
            result = (
                await external(ctx, inp.tool, {"call_key": inp.call_key})
                if external is not None
                else await spec.read(ctx, args)  # type: ignore[misc]
            )
            return UndoToolOutcome(undone=not result.is_error, text=result.text)

        def undo() -> UndoToolOutcome:
            with self.db.session() as session:
                assert spec.write is not None
                result = spec.write(ctx, session, args)
                self.ledger.append_in(
                    session,
                    [
                        activity_event(
                            "tool/undo",
                            actor=f"agent:{inp.principal.agent}",
                            action="tool.compensated",
                            detail={
                                "tool": inp.tool,
                                "of_tool": inp.of_tool,
                                "call_key": inp.call_key,
                                "result": result.text[:300],
                            },
                        )
                    ],
                )
                return UndoToolOutcome(undone=not result.is_error, text=result.text)

        return await asyncio.to_thread(undo)


__all__ = [
    "CallTool",
    "CustomerCredit",
    "CustomerEmail",
    "ListTools",
    "ReplyDraft",
    "ToolActivities",
    "ToolArgumentsInvalid",
    "ToolCallRecord",
    "ToolEffectRow",
    "ToolContext",
    "ToolRegistry",
    "ToolSpec",
    "UNKNOWN_TOOL",
    "UnknownToolError",
    "builtin_tools",
    "credits_of",
    "denial_text",
    "emails_of",
    "tool_calls_of",
    "tool_message",
    "tool_policy_input",
]
