"""The approver inbox as approvers use it: a real headless Chromium (baton/devstack/webui.py)
signs in through the dev issuer's page, reads the inbox and request pages, fills forms and
clicks, against a real inbox server, a real worker with signed (sealed, bound) approvals and the
session's Temporal dev server. One server, worker and browser for the module; each test starts
its own finance closes (a period each) and leaves none running.

Set BATON_INBOX_SCREENSHOTS=docs/img to (re)write the docs' screenshots of the inbox and a
request page while the tests run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from baton.devstack.local import free_port
from baton.devstack.webui import Browser, browser_binaries
from baton.identity import SEAL_KEY_FILE, DevIssuer, init_dev_issuer, issue_token
from baton.inbox import create_app, request_path
from baton.inbox.auth import (
    INBOX_AUDIENCE,
    SESSION_COOKIE,
    Gatekeeper,
    TokenExchange,
    Viewer,
)
from baton.inbox.backend import InboxBackend
from baton.inbox.server import build_config
from tests.conftest import Harness, _harness
from tests.support.scripted_model import ScriptedModelServer
from tests.test_approvals import script_entries
from tests.test_kpi import another_period
from workflows.contracts import ApprovalRequest
from workflows.signed_approval import AssertionRefused

# CI (.ci/run) sets BATON_REQUIRE_BROWSER: there a missing Chromium fails these tests
pytestmark = pytest.mark.skipif(
    browser_binaries() is None and not os.environ.get("BATON_REQUIRE_BROWSER"),
    reason="chromium + chromedriver not installed (apt-get install -y chromium chromium-driver)",
)

T = TypeVar("T")
SHOTS = os.environ.get("BATON_INBOX_SCREENSHOTS")


@dataclass
class Inbox:
    h: Harness
    dev: DevIssuer
    url: str
    browser: Browser
    started: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Drive the browser off the event loop (the inbox server runs on it)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def open(self, path: str) -> None:
        await self.do(self.browser.open, self.url + path)

    async def see(self, *needles: str, timeout: float = 20.0) -> str:
        return await self.do(self.browser.wait_for_text, *needles, timeout=timeout)

    async def gone(self, *needles: str, timeout: float = 20.0) -> str:
        """Wait until none of ``needles`` is on the page (without reloading it)."""
        async with asyncio.timeout(timeout):
            while True:
                text = await self.do(self.browser.text)
                if not any(n in text for n in needles):
                    return text
                await asyncio.sleep(0.25)

    async def sign_in(self, person: str) -> None:
        await self.open("/sign-in")
        await self.do(self.browser.delete_cookies)
        await self.open("/sign-in")
        await self.do(self.browser.select, "#person", person)
        await self.do(self.browser.click, "#sign-in")
        await self.see(f"signed in as {person}")

    async def start(
        self, *entries: tuple[str, str, str], requested_by: str = "alice"
    ) -> tuple[WorkflowHandle[Any, Any], ApprovalRequest]:
        """A finance close of a fresh period whose reconciler proposes ``entries``; its first
        pending approval request."""
        h = self.h
        period = another_period(h)
        script_entries(h, *entries, period=period)
        handle = await h.client.start_finance_close(
            h.start_input(period=period, requested_by=requested_by)
        )
        self.started.append(handle)
        request = (await h.wait_for_pending(handle.id)).pending[0]
        return handle, request

    def token(
        self, person: str, roles: list[str], workflow_id: str, request: ApprovalRequest
    ) -> str:
        return issue_token(
            self.dev.directory,
            user=person,
            roles=roles,
            workflow_id=workflow_id,
            request_id=request.request_id,
            action_digest=request.action_digest,
        )

    def page_of(self, workflow_id: str, request_id: str) -> str:
        return request_path(workflow_id, request_id)


@pytest.fixture(scope="module")
async def inbox(
    temporal_env: WorkflowEnvironment,
    model_server: ScriptedModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Inbox]:
    tmp = tmp_path_factory.mktemp("inbox")
    dev = init_dev_issuer(tmp / "issuer", seal=True)
    async with _harness(
        temporal_env.client,
        model_server,
        f"sqlite:///{tmp / 'baton.db'}",
        approval_trust_file=dev.trust_file,
        approval_seal_key_file=dev.directory / SEAL_KEY_FILE,
        issuer_dir=dev.directory,
    ) as h:
        h.client.approval_trust = dev.trust  # decisions "made elsewhere" are sealed too
        async with h.worker():
            config = await build_config(
                h.settings, task_queue=h.client.task_queue, client=temporal_env.client
            )
            config.poll_ms = 500
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            async with asyncio.timeout(20):
                while not server.started:
                    await asyncio.sleep(0.05)
            browser = await asyncio.to_thread(Browser().__enter__)
            try:
                yield Inbox(h, dev, f"http://127.0.0.1:{port}", browser)
            finally:
                await asyncio.to_thread(browser.close)
                server.should_exit = True
                await serving


@pytest.fixture
async def ui(inbox: Inbox) -> AsyncIterator[Inbox]:
    """The module's inbox; the runs a test started are terminated after it if still running."""
    inbox.started = []
    yield inbox
    for handle in inbox.started:
        try:
            described = await handle.describe()
            if described.status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")
        except Exception:
            pass


BIG = ("ADJ-BIG", "6100-bank-fees", "-1500.00")  # a finance-controller approves


def audit_actions(h: Harness, workflow_id: str) -> list[str]:
    return [r.action for r in h.runtime.ledger.trail(workflow_id)]


# -- access ----------------------------------------------------------------------------------


async def test_no_token_no_access(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    page = ui.page_of(handle.id, request.request_id)
    async with httpx.AsyncClient(base_url=ui.url) as http:
        for path in ("/", page, "/fragments/inbox", f"/audit?workflow={handle.id}"):
            answer = await http.get(path)
            assert answer.status_code == 401, path
            assert "no identity token" in answer.text
        posted = await http.post(
            page.replace("?", "/decide?", 1),
            data={"verdict": "approve", "rationale": "x", "digest": request.action_digest},
        )
        assert posted.status_code == 401
    await ui.open("/")
    await ui.do(ui.browser.delete_cookies)
    await ui.open(page)
    await ui.see("Sign in required", "no identity token")
    assert (await ui.h.client.pending_approvals(handle.id))[0].approvals == []


async def test_temporal_not_answering_is_a_503_page_not_a_500(ui: Inbox) -> None:
    """A visibility list that Temporal fails (seen under load) gives the approver a page that
    says so, and the live poll a JSON 503 it ignores until the next poll."""
    config = await build_config(
        ui.h.settings, task_queue=ui.h.client.task_queue, client=ui.h.client.client
    )

    async def unavailable(*, fresh: bool = False) -> Any:
        raise RPCError("operation was canceled", RPCStatusCode.CANCELLED, b"")

    config.backend.pending = unavailable  # type: ignore[method-assign]
    good = issue_token(
        ui.dev.directory, user="carol", roles=["finance-controller"], audience=INBOX_AUDIENCE
    )
    transport = httpx.ASGITransport(app=create_app(config))
    headers = {"Authorization": f"Bearer {good}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://inbox") as http:
        page = await http.get("/", headers=headers)
        assert page.status_code == 503
        assert "Temporal did not answer (CANCELLED: operation was canceled)" in page.text
        assert "Internal Server Error" not in page.text
        poll = await http.get("/fragments/inbox", headers=headers)
        assert poll.status_code == 503 and "Temporal did not answer" in poll.json()["error"]


async def test_a_forged_token_is_refused(ui: Inbox) -> None:
    real = ui.dev.trust.keys
    kid = next(iter(real))
    claims = {"iss": "baton-dev-issuer", "aud": INBOX_AUDIENCE, "sub": "carol",
              "roles": ["finance-controller"], "exp": 4102444800, "jti": "forged"}  # fmt: skip
    forged = jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    # an approval token of the right issuer is not a sign-in (another audience)
    approval = issue_token(ui.dev.directory, user="carol", roles=["finance-controller"])
    async with httpx.AsyncClient(base_url=ui.url) as http:
        answer = await http.get("/", headers={"Authorization": f"Bearer {forged}"})
        assert answer.status_code == 401
        assert "signature does not verify" in answer.text and "forged" in answer.text
        answer = await http.get("/", headers={"Authorization": f"Bearer {approval}"})
        assert answer.status_code == 401 and "audience" in answer.text
        good = issue_token(
            ui.dev.directory, user="carol", roles=["finance-controller"], audience=INBOX_AUDIENCE
        )
        answer = await http.get("/", headers={"Authorization": f"Bearer {good}"})
        assert answer.status_code == 200 and "signed in as" in answer.text
        # a signed-in POST without the form's CSRF token is refused
        answer = await http.post(
            "/bulk-approve",
            headers={"Authorization": f"Bearer {good}"},
            data={"rationale": "x", "item": "[]"},
        )
        assert answer.status_code == 403 and "CSRF" in answer.text
    await ui.open("/sign-in")
    await ui.do(ui.browser.delete_cookies)
    await ui.open("/sign-in")
    await ui.do(ui.browser.set_cookie, SESSION_COOKIE, forged)
    await ui.open("/")
    await ui.see("Sign in required", "identity token refused", "forged")


# -- the inbox -------------------------------------------------------------------------------


async def test_sign_in_and_see_exactly_the_requests_one_may_decide(ui: Inbox) -> None:
    mine, mine_request = await ui.start(BIG)
    theirs, theirs_request = await ui.start(BIG, requested_by="carol")  # carol asked: not hers
    both, both_request = await ui.start(("ADJ-HUGE", "6100-bank-fees", "-60000.00"))
    await ui.sign_in("carol")
    await ui.see(mine_request.request_id, both_request.request_id)
    text = await ui.do(ui.browser.text)
    assert theirs_request.request_id not in text
    assert await ui.do(ui.browser.title) == "Inbox (2) · Baton"
    assert "1 x cfo + 1 x finance-controller" in text and "acme" in text
    if SHOTS:
        await ui.do(ui.browser.screenshot, Path(SHOTS) / "inbox.png")
    # all pending, read-only where not hers, with the reason
    await ui.open("/?" + urlencode({"scope": "all"}))
    await ui.see(theirs_request.request_id, "read-only: you requested this action")
    # filters: search narrows the list
    await ui.open("/?" + urlencode({"q": both.id}))
    text = await ui.see(both_request.request_id)
    assert mine_request.request_id not in text
    # frank may decide carol's; an accountant may decide nothing
    await ui.sign_in("frank")
    await ui.see(theirs_request.request_id, mine_request.request_id)
    await ui.sign_in("erin")
    await ui.see("Nothing waits for you")
    assert await ui.do(ui.browser.title) == "Inbox (0) · Baton"
    await ui.sign_in("carol")
    await ui.open(ui.page_of(both.id, both_request.request_id))
    await ui.see("ADJ-HUGE", "-60,000.00", both_request.action_digest, "the Temporal Web UI")
    if SHOTS:
        await ui.do(ui.browser.screenshot, Path(SHOTS) / "request.png")
        await ui.do(ui.browser.execute, "document.querySelector('#decide-card').scrollIntoView()")
        await ui.do(ui.browser.screenshot, Path(SHOTS) / "decide.png")
    assert mine.id and theirs.id


async def test_approve_one_and_see_the_run_complete(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.see(request.request_id)
    await ui.do(ui.browser.click, f'tr[data-request="{request.request_id}"] a')
    await ui.see("ADJ-BIG", "scripted ADJ-BIG", "Decide", "Policy")
    await ui.do(ui.browser.type, "#rationale", "bank statement checked")
    await ui.do(ui.browser.click, "#approve")
    await ui.see("Accepted: approved", request.request_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert [o.outcome for o in result.approvals] == ["approved"]
    assert result.approvals[0].approvers == ["carol"]
    assert "approval.vote" in audit_actions(ui.h, handle.id)


async def test_a_decision_needs_a_rationale(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.open(ui.page_of(handle.id, request.request_id))
    await ui.do(ui.browser.click, "#approve")
    await ui.see("rationale: required")
    assert (await ui.h.client.pending_approvals(handle.id))[0].approvals == []


async def test_amend_an_amount_through_the_form(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.open(ui.page_of(handle.id, request.request_id))
    field = '[name="amend.ADJ-BIG.amount"]'
    await ui.do(ui.browser.type, field, "-900.00")
    await ui.do(ui.browser.click, "#amend")  # no rationale: nothing is sent
    await ui.see("rationale: required")
    await ui.do(ui.browser.type, field, "-900.00")
    await ui.do(ui.browser.type, "#amend-rationale", "half of the fee was refunded")
    await ui.do(ui.browser.click, "#amend")
    await ui.see("Accepted: amended by carol recorded")
    result = await asyncio.wait_for(handle.result(), 30)
    [posted] = result.posted
    assert posted.amount == Decimal("-900.00") and posted.amended_by == "carol"


async def test_a_refused_decision_shows_the_validators_reason(ui: Inbox) -> None:
    h = ui.h
    handle, first = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.open(ui.page_of(handle.id, first.request_id))
    await ui.see("ADJ-BIG")
    # frank amends elsewhere while carol looks: her page says so, and her forms close
    h.client.approval_token = ui.token("frank", ["finance-controller"], handle.id, first)
    await h.client.amend(
        handle.id,
        approver="frank",
        rationale="fee is 1,200",
        amendments=[{"entry_id": "ADJ-BIG", "amount": "-1200.00"}],
        action_digest=first.action_digest,
    )
    h.client.approval_token = None
    await ui.see("no longer pending: amended")
    disabled = await ui.do(
        ui.browser.execute, "return document.querySelector('fieldset.decide').disabled"
    )
    assert disabled is True
    # the revised request: carol approves what she reviewed before (the old digest)
    second = await _next_round(h, handle.id, first)
    await ui.open(ui.page_of(handle.id, second.request_id))
    await ui.see("-1,200.00")
    await ui.do(
        ui.browser.execute,
        "document.querySelector('#decide-form [name=digest]').value = arguments[0]",
        first.action_digest,
    )
    await ui.do(ui.browser.type, "#rationale", "looked fine")
    await ui.do(ui.browser.click, "#approve")
    await ui.see("Refused: action digest mismatch: the action changed since it was reviewed")
    assert (await h.client.pending_approvals(handle.id))[0].approvals == []


async def _next_round(h: Harness, workflow_id: str, before: ApprovalRequest) -> ApprovalRequest:
    async with asyncio.timeout(30):
        while True:
            pending = await h.client.pending_approvals(workflow_id)
            if pending and pending[0].request_id != before.request_id:
                return pending[0]
            await asyncio.sleep(0.1)


async def test_bulk_approve_three(ui: Inbox) -> None:
    runs = [await ui.start(BIG) for _ in range(3)]
    await ui.sign_in("dave")
    await ui.see(*(r.request_id for _, r in runs))
    for _, request in runs:
        await ui.do(ui.browser.click, f'input[name=item][value*="{request.request_id}"]')
    await ui.do(ui.browser.type, "#bulk-rationale", "month-end fees, all checked")
    await ui.do(ui.browser.click, "#bulk-approve")
    text = await ui.see("Bulk approve", *(f"{r.request_id}: accepted" for _, r in runs))
    assert "refused" not in text
    for handle, _ in runs:
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.approvals[0].approvers == ["dave"]


async def test_delegate_to_a_colleague_who_then_approves(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.open(ui.page_of(handle.id, request.request_id))
    await ui.do(ui.browser.type, "#comment-text", "frank knows this vendor")
    await ui.do(ui.browser.click, "#comment")
    await ui.see("Accepted: comment by carol recorded", "frank knows this vendor")
    await ui.do(ui.browser.select, "#delegate", "frank")
    await ui.do(ui.browser.type, "#delegate-rationale", "on leave tomorrow")
    await ui.do(ui.browser.click, "#delegate-button")
    await ui.see(
        f"Accepted: carol delegated {request.request_id} to frank",
        "Read-only: you delegated this request to frank",
    )
    await ui.sign_in("frank")
    await ui.see(request.request_id, "delegated to you by carol")
    await ui.open(ui.page_of(handle.id, request.request_id))
    await ui.see("frank knows this vendor", "carol delegated to frank")
    await ui.do(ui.browser.type, "#rationale", "vendor confirmed")
    await ui.do(ui.browser.click, "#approve")
    await ui.see("Accepted: approved")
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.approvals[0].approvers == ["frank"]
    actions = audit_actions(ui.h, handle.id)
    assert "approval.comment" in actions and "approval.delegated" in actions


async def test_a_requester_sees_the_request_read_only(ui: Inbox) -> None:
    handle, request = await ui.start(BIG)
    await ui.sign_in("alice")
    await ui.see("Nothing waits for you")
    await ui.open(ui.page_of(handle.id, request.request_id))
    await ui.see("Read-only: you requested this action", "ADJ-BIG")
    assert await ui.do(ui.browser.execute, "return document.querySelector('#approve')") is None
    # the requester may still comment (visible to the approvers)
    await ui.do(ui.browser.type, "#comment-text", "needed for the audit on Friday")
    await ui.do(ui.browser.click, "#comment")
    await ui.see("Accepted: comment by alice recorded")


async def test_decisions_elsewhere_and_cancelled_runs_show_up_without_a_reload(ui: Inbox) -> None:
    h = ui.h
    decided, decided_request = await ui.start(BIG)
    cancelled, cancelled_request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.see(decided_request.request_id, cancelled_request.request_id)
    h.client.approval_token = ui.token("frank", ["finance-controller"], decided.id, decided_request)
    await h.client.approve(
        decided.id,
        approver="frank",
        rationale="approved from the CLI",
        request_id=decided_request.request_id,
        action_digest=decided_request.action_digest,
    )
    h.client.approval_token = None
    await ui.gone(decided_request.request_id)
    await cancelled.cancel()
    text = await ui.gone(cancelled_request.request_id)
    assert "Nothing waits for you" in text
    assert await ui.do(ui.browser.title) == "Inbox (0) · Baton"
    await decided.result()


async def test_a_forged_seal_or_a_replayed_page_token_cannot_decide(ui: Inbox) -> None:
    """What the inbox sends is checked by the workflow, not trusted: a delegate policy refuses
    is refused with policy's reason, and nothing changes."""
    handle, request = await ui.start(BIG)
    await ui.sign_in("carol")
    await ui.open(ui.page_of(handle.id, request.request_id))
    # erin (an accountant) is not offered; a crafted option is refused by policy
    await ui.do(
        ui.browser.execute,
        "var o = document.createElement('option'); o.value = 'erin'; o.text = 'erin';"
        "document.querySelector('#delegate').appendChild(o);",
    )
    await ui.do(ui.browser.select, "#delegate", "erin")
    await ui.do(ui.browser.type, "#delegate-rationale", "please")
    await ui.do(ui.browser.click, "#delegate-button")
    await ui.see("Refused: policy refuses the delegation: erin holds none of the roles")
    [still] = await ui.h.client.pending_approvals(handle.id)
    assert still.delegations == [] and "carol" in still.eligible_approvers
    assert "approval.delegation_refused" in audit_actions(ui.h, handle.id)


async def test_other_processes_are_decided_in_the_same_inbox(ui: Inbox) -> None:
    """An HR onboarding's privileged grant, with its arguments on the page, approved by the
    department's manager: every governed process takes the inbox's decisions."""
    from tests.test_hr_onboarding import new_hire, start, wait_for_pending

    h = ui.h
    hire = new_hire(h)
    handle = await h.client.start_onboarding(start(h, hire))
    ui.started.append(handle)
    request = await wait_for_pending(h, handle.id)
    await ui.sign_in("maya")
    await ui.see(request.request_id, "hr_onboarding")
    await ui.open(ui.page_of(handle.id, request.request_id))
    await ui.see("grant_entitlements", hire.employee_id, '"name": "admin"', "Policy")
    await ui.do(ui.browser.type, "#rationale", "on-call rotation needs it")
    await ui.do(ui.browser.click, "#approve")
    await ui.see("Accepted: approved")
    result = await asyncio.wait_for(handle.result(), 30)
    assert any(g.approved_by == ["maya"] for g in result.granted)


async def test_decisions_through_a_token_exchange(ui: Inbox) -> None:
    """The production wiring (BATON_INBOX_TOKEN_EXCHANGE_URL): the inbox trades the person's
    identity token for a bound approval token over RFC 8693, here at the dev issuer's exchange;
    the signed worker accepts the decision. A bad subject token gets no approval token."""
    handle, request = await ui.start(BIG)
    exchange = TokenExchange(f"{ui.url}/dev-issuer/token")
    identity = issue_token(
        ui.dev.directory, user="frank", roles=["finance-controller"], audience=INBOX_AUDIENCE
    )
    frank = Gatekeeper(ui.dev.trust).viewer(identity)
    backend = InboxBackend(ui.h.temporal, trust=ui.dev.trust, tokens=exchange)
    bound = {"request_id": request.request_id, "action_digest": request.action_digest}
    token = await exchange.approval_token(frank, workflow_id=handle.id, **bound)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "frank" and claims["baton_request_id"] == request.request_id
    forged = Viewer(frank.identity, identity[:-4] + "AAAA")
    with pytest.raises(AssertionRefused, match="HTTP 400.*invalid_grant"):
        await exchange.approval_token(forged, workflow_id=handle.id, **bound)
    outcome = await backend.decide(
        frank, handle.id, verdict="approve", rationale="via the exchange", **bound
    )
    assert outcome.accepted, outcome.message
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.approvals[0].approvers == ["frank"]
