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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditLedger, activity_event
from activities.kill_switch import KillSwitch, Subject
from workflows.contracts import (
    PROCESS_BY_WORKFLOW_TYPE,
    AdjustingEntry,
    AdjustmentProposal,
    CloseMemo,
    ComplianceFinding,
    ComplianceInput,
    ComplianceReview,
    MemoInput,
    ProposeAdjustmentsInput,
    ReviseAdjustmentsInput,
    TokenUsage,
    digest,
)

T = TypeVar("T", bound=BaseModel)

RETRYABLE_STATUS = {408, 409, 429}
HEARTBEAT_EVERY_SECONDS = 5.0


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
    ) -> None:
        self.switch = switch
        self.client = client
        self.ledger = ledger
        self.model = model
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self.timeout_seconds = timeout_seconds

    @activity.defn(name="propose_adjustments")
    async def propose_adjustments(self, inp: ProposeAdjustmentsInput) -> AdjustmentProposal:
        wire, usage = await self._ask("reconciler", RECONCILER_PROMPT, inp, _WireProposal)
        entries = _entries("reconciler", wire)
        await self._audit(
            "reconciler", "agent.proposed_adjustments", inp, wire, usage, {"entries": len(entries)}
        )
        return AdjustmentProposal(entries=entries, usage=usage)

    @activity.defn(name="revise_adjustments")
    async def revise_adjustments(self, inp: ReviseAdjustmentsInput) -> AdjustmentProposal:
        wire, usage = await self._ask("reviser", REVISER_PROMPT, inp, _WireProposal)
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
        wire, usage = await self._ask("compliance_checker", COMPLIANCE_PROMPT, inp, _WireReview)
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
        wire, usage = await self._ask("close_memo_writer", MEMO_PROMPT, inp, _WireMemo)
        await self._audit(
            "close_memo_writer",
            "agent.wrote_memo",
            inp,
            wire,
            usage,
            {"memo_chars": len(wire.memo)},
        )
        return CloseMemo(memo=wire.memo, usage=usage)

    # -- shared plumbing -------------------------------------------------------------------

    async def _ask(
        self, agent: str, system: str, payload: BaseModel, wire: type[T]
    ) -> tuple[T, TokenUsage]:
        if self.switch is not None:  # engaged for this agent, tenant, process or globally?
            workflow_type = activity.info().workflow_type or ""
            subject = Subject(
                process=PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type),
                agent=agent,
                tenant=str(getattr(payload, "tenant", "")),
            )
            await asyncio.to_thread(self.switch.raise_if_blocking, subject)
        request = self.client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": payload.model_dump_json()},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": agent, "schema": wire.model_json_schema(), "strict": True},
            },
            timeout=self.timeout_seconds,
        )
        try:
            response = await _heartbeating(request)
        except openai.APIStatusError as err:
            raise _map_status_error(agent, err) from err
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise ApplicationError(
                f"{agent}: model endpoint unreachable or timed out: {err}", type="LLMUnavailable"
            ) from err
        usage = TokenUsage(model=response.model or self.model)
        if response.usage is not None:
            usage = self._priced(
                usage.model, response.usage.prompt_tokens, response.usage.completion_tokens
            )
        content = response.choices[0].message.content if response.choices else None
        try:
            return wire.model_validate_json(content or ""), usage
        except ValidationError as err:
            raise _invalid_output(agent, err) from err

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
        event = activity_event(
            agent,
            actor=f"agent:{agent}",
            action=action,
            detail={**detail, "attempt": activity.info().attempt},
            model=usage.model,
            tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
            input_digest=digest(inp),
            output_digest=digest(out),
        )
        await asyncio.to_thread(self.ledger.append, [event])


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
