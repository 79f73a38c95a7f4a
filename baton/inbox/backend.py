"""What the approver inbox reads from and sends to Temporal.

* The list: one visibility query for runs whose ``BatonApprovalState`` is ``pending`` (search
  attributes + the memo line the approval gate keeps, ``baton_pending``): no run is queried or
  scanned, so the list is as fast as visibility and works while workers are down.
* One request: the run's ``pending_approvals`` query (the full request: entries, findings,
  votes, comments, delegations), with the memo line as the fallback when no worker answers.
* Decisions, comments and delegations: the Updates ``decide_approval``, ``comment_approval`` and
  ``delegate_approval`` by name (every governed process declares them), each carrying an approval
  token bound to the exact workflow, request and digest the page showed, sealed to the workers'
  key when the trust names one (the token never enters history in clear).

Who may decide is the workflow's rule (its validator has the last word); :func:`refusal_for`
mirrors it for display only, so the page can say why an item is read-only.

Must not: render HTML (baton/inbox/app.py does) or verify sign-ins (baton/inbox/auth.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError

from baton.inbox.auth import ApprovalTokenSource, Viewer
from workflows import visibility
from workflows.contracts import (
    APPROVAL_COMMENT_UPDATE,
    APPROVAL_DELEGATE_UPDATE,
    APPROVAL_UPDATE,
    PENDING_APPROVALS_QUERY,
    PENDING_MEMO,
    ApprovalAck,
    ApprovalComment,
    ApprovalDecision,
    ApprovalDelegationInput,
    ApprovalRequest,
    PendingApproval,
)
from workflows.contracts.security import ApprovalTrust
from workflows.signed_approval import SEALED_PREFIX, AssertionRefused, seal_assertion

#: how long the request page waits for a worker to answer the pending query
QUERY_TIMEOUT = timedelta(seconds=5)
#: how old the shared list of pending requests may be (pages poll every 2 s)
SNAPSHOT_SECONDS = 1.0


@dataclass
class InboxItem:
    """One pending request as the list shows it: the memo line plus the run's attributes."""

    line: PendingApproval
    tenant: str
    risk: str
    run_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.line.workflow_id, self.line.request_id)

    def sla_left(self, now: datetime) -> timedelta:
        return self.line.deadline - now


@dataclass
class RequestView:
    """One request in full (``request`` is None when no worker answered: memo line only)."""

    item: InboxItem
    request: ApprovalRequest | None
    status: str
    detail_error: str | None = None


@dataclass
class Outcome:
    """What became of a decision, comment or delegation: accepted, or refused with the reason."""

    workflow_id: str
    request_id: str
    accepted: bool
    message: str
    still_needed: list[str] = field(default_factory=list)


def refusal_for(viewer: Viewer, line: PendingApproval) -> str | None:
    """Why ``viewer`` may not decide on ``line`` (None: they may). Display only: the
    workflow's validator decides."""
    me = viewer.name
    if me == line.requested_by:
        return f"you requested this action ({line.request_id}): segregation of duties"
    if me in line.approved_by:
        return "you have already approved this request; it waits for " + (
            " + ".join(f"{r.count} x {r.role}" for r in line.still_needed) or "nobody"
        )
    if me in line.delegated_to.values():
        delegate = next(t for t, f in line.delegated_to.items() if f == me)
        return f"you delegated this request to {delegate}"
    if me not in line.eligible_approvers:
        return (
            f"policy does not allow you to decide: it needs one of the roles "
            f"{', '.join(line.approver_roles) or '(none open)'}; eligible now: "
            f"{', '.join(line.eligible_approvers) or 'nobody'}"
        )
    if not set(viewer.roles) & set(line.approver_roles):
        return (
            f"your signed roles ({', '.join(viewer.roles) or 'none'}) fill none of the open "
            f"slots ({', '.join(line.approver_roles)})"
        )
    return None


class InboxBackend:
    def __init__(
        self,
        client: Client,
        *,
        trust: ApprovalTrust | None,
        tokens: ApprovalTokenSource | None,
        task_queue: str | None = None,
    ) -> None:
        """``trust``: the workers' approval trust (None: the workers take unsigned decisions,
        and no token is sent). ``task_queue``: list only runs on this task queue (a shared
        Temporal namespace with several Baton deployments; tests)."""
        self.client = client
        self.trust = trust
        self.tokens = tokens
        self.task_queue = task_queue
        self._snapshot: tuple[float, list[InboxItem]] | None = None
        self._listing: asyncio.Future[list[InboxItem]] | None = None

    # -- read --------------------------------------------------------------------------------

    def _query(self) -> str:
        clauses = [f"{visibility.APPROVAL_STATE.name} = 'pending'", "ExecutionStatus = 'Running'"]
        if self.task_queue:
            clauses.append(f"TaskQueue = '{_escaped(self.task_queue)}'")
        return " AND ".join(clauses)

    async def pending(self, *, fresh: bool = False) -> list[InboxItem]:
        """Every pending request across all runs, at most ``SNAPSHOT_SECONDS`` old: every open
        page polls, so one visibility list serves them all (``fresh``: list now)."""
        now = time.monotonic()
        if not fresh and self._snapshot is not None and now - self._snapshot[0] < SNAPSHOT_SECONDS:
            return self._snapshot[1]
        if self._listing is None:  # callers arriving meanwhile share the one list call
            self._listing = asyncio.ensure_future(self._list())
        listing = self._listing
        try:
            items = await asyncio.shield(listing)
        finally:
            if self._listing is listing and listing.done():
                self._listing = None
        self._snapshot = (now, items)
        return items

    def invalidate(self) -> None:
        """Forget the snapshot (after this inbox sent a decision: the next page lists anew)."""
        self._snapshot = None

    async def _list(self) -> list[InboxItem]:
        """One visibility list (all pages), read from the raw answer: the memo line and two
        search attributes are all the inbox needs, so nothing else is decoded."""
        found: list[InboxItem] = []
        token = b""
        while True:
            page = await self.client.workflow_service.list_workflow_executions(
                ListWorkflowExecutionsRequest(
                    namespace=self.client.namespace,
                    query=self._query(),
                    page_size=1000,
                    next_page_token=token,
                )
            )
            for info in page.executions:
                lines = await self._memo_lines(info.memo.fields.get(PENDING_MEMO))
                fields = info.search_attributes.indexed_fields
                tenant, risk = (
                    _keyword(fields, visibility.TENANT),
                    _keyword(fields, visibility.RISK),
                )
                for raw in lines:
                    found.append(
                        InboxItem(
                            line=PendingApproval.model_validate(raw),
                            tenant=tenant,
                            risk=risk,
                            run_id=info.execution.run_id,
                        )
                    )
            token = page.next_page_token
            if not token:
                return found

    async def _memo_lines(self, payload: Payload | None) -> list[Any]:
        if payload is None:
            return []
        if payload.metadata.get("encoding") == b"json/plain":
            value = json.loads(payload.data)
        else:  # encrypted (BATON_ENCRYPTION_KEYS) or another encoding: the client's converter
            converter = self.client.data_converter
            [decoded] = await converter.decode([payload])
            value = converter.payload_converter.from_payloads([decoded])[0]
        return value if isinstance(value, list) else []

    async def view(self, workflow_id: str, request_id: str) -> RequestView | None:
        """One request: the run's own answer when a worker gives one, else its memo line;
        None when the run has no such pending request (decided, withdrawn, unknown)."""
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            described = await handle.describe()
        except RPCError:
            return None
        memo = await described.memo_value(PENDING_MEMO, default=[])
        line = next(
            (
                PendingApproval.model_validate(m)
                for m in memo or []
                if m["request_id"] == request_id
            ),
            None,
        )
        status = described.status.name if described.status else "UNKNOWN"
        if line is None or described.status != WorkflowExecutionStatus.RUNNING:
            return None
        attributes = described.typed_search_attributes
        item = InboxItem(
            line=line,
            tenant=attributes.get(visibility.TENANT) or "",
            risk=attributes.get(visibility.RISK) or "",
            run_id=described.run_id,
        )
        try:
            pending = await handle.query(
                PENDING_APPROVALS_QUERY,
                result_type=list[ApprovalRequest],
                rpc_timeout=QUERY_TIMEOUT,
            )
        except (TimeoutError, RPCError) as err:
            return RequestView(item, None, status, f"no worker answered the run's query: {err}")
        except Exception as err:  # a query the run's code fails: still show the memo line
            return RequestView(item, None, status, f"the run's query failed: {err}")
        request = next((r for r in pending if r.request_id == request_id), None)
        return RequestView(item, request, status)

    async def closed_reason(self, workflow_id: str, request_id: str) -> str:
        """A line on why a request is no longer pending, for a page that showed it."""
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return f"{request_id} is unknown: no run {workflow_id}"
        state = described.typed_search_attributes.get(visibility.APPROVAL_STATE) or "closed"
        status = described.status.name.lower() if described.status else "unknown"
        if described.status == WorkflowExecutionStatus.CANCELED:
            return f"{request_id} was withdrawn: the run was cancelled"
        if state == "withdrawn":
            return f"{request_id} was withdrawn (the run is {status})"
        if state == "pending":
            return f"{request_id} is closed; the run now waits on another request"
        return f"{request_id} is no longer pending: {state.replace('_', ' ')} (the run is {status})"

    # -- write -------------------------------------------------------------------------------

    async def _assertion(
        self, viewer: Viewer, workflow_id: str, request_id: str, action_digest: str
    ) -> str | None:
        """The approval token of this one action, sealed when the trust names a seal key."""
        if self.trust is None or self.tokens is None:
            return None
        token = await self.tokens.approval_token(
            viewer, workflow_id=workflow_id, request_id=request_id, action_digest=action_digest
        )
        if self.trust.seal_key and not token.startswith(SEALED_PREFIX):
            token = seal_assertion(token, self.trust.seal_key)
        return token

    async def decide(
        self,
        viewer: Viewer,
        workflow_id: str,
        *,
        request_id: str,
        verdict: str,
        rationale: str,
        action_digest: str,
        amendments: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        """Send one decision as the Update ``decide_approval``; the validator's answer."""
        try:
            assertion = await self._assertion(viewer, workflow_id, request_id, action_digest)
        except (AssertionRefused, ValueError) as err:
            return Outcome(workflow_id, request_id, False, f"no approval token: {err}")
        decision = ApprovalDecision.model_validate(
            {
                "request_id": request_id,
                "approver": viewer.name,
                "verdict": verdict,
                "rationale": rationale,
                "action_digest": action_digest,
                "amendments": amendments or [],
                "assertion": assertion,
            }
        )
        return await self._update(workflow_id, request_id, APPROVAL_UPDATE, decision)

    async def comment(
        self, viewer: Viewer, workflow_id: str, *, request_id: str, text: str, action_digest: str
    ) -> Outcome:
        return await self._signed(
            viewer,
            workflow_id,
            APPROVAL_COMMENT_UPDATE,
            ApprovalComment,
            request_id=request_id,
            author=viewer.name,
            text=text,
            action_digest=action_digest,
        )

    async def delegate(
        self,
        viewer: Viewer,
        workflow_id: str,
        *,
        request_id: str,
        delegate: str,
        rationale: str,
        action_digest: str,
    ) -> Outcome:
        return await self._signed(
            viewer,
            workflow_id,
            APPROVAL_DELEGATE_UPDATE,
            ApprovalDelegationInput,
            request_id=request_id,
            approver=viewer.name,
            delegate=delegate,
            rationale=rationale,
            action_digest=action_digest,
        )

    async def _signed(
        self, viewer: Viewer, workflow_id: str, update: str, model: type[BaseModel], **fields: Any
    ) -> Outcome:
        """Send the Update ``update`` with ``model(**fields)``, carrying the viewer's approval
        token for that request and action (``fields``' request_id and action_digest)."""
        request_id = fields["request_id"]
        assertion = await self._assertion(viewer, workflow_id, request_id, fields["action_digest"])
        arg = model(**fields, assertion=assertion)
        return await self._update(workflow_id, request_id, update, arg)

    async def _update(self, workflow_id: str, request_id: str, name: str, arg: Any) -> Outcome:
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            ack = await handle.execute_update(name, arg, result_type=ApprovalAck)
            self.invalidate()
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            reason = getattr(cause, "message", None) or str(cause)
            return Outcome(workflow_id, request_id, False, reason)
        except RPCError as err:
            return Outcome(
                workflow_id, request_id, False, f"the run does not take decisions now: {err}"
            )
        return Outcome(
            workflow_id,
            request_id,
            ack.accepted,
            ack.message,
            [f"{r.count} x {r.role}" for r in ack.still_needed],
        )


def sort_key(item: InboxItem, now: datetime) -> tuple[int, float, str]:
    """Overdue first (most overdue on top), then the least SLA left."""
    left = item.sla_left(now).total_seconds()
    return (0 if left < 0 else 1, left, item.line.request_id)


def age(item: InboxItem, now: datetime) -> timedelta:
    return now - item.line.requested_at


def span(delta: timedelta) -> str:
    """A duration as 45s / 12m / 5h / 3d; negative (overdue) with a leading '-'."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _keyword(fields: Any, key: Any) -> str:
    payload = fields.get(key.name)
    if payload is None:
        return ""
    value = json.loads(payload.data)
    return str(value) if isinstance(value, str) else ""


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
