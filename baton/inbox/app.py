"""The approver inbox: server-rendered pages (FastAPI + Jinja2, a little inline JS to stay
current) where approvers sign in, see what waits for them, and decide with evidence.

Pages: ``/sign-in`` (the dev issuer's people picker), ``/`` (my inbox, filters, bulk approve),
``/requests/{request_id}?workflow=...`` (one request: the action, evidence, policy, votes,
comments; approve / reject / amend / request changes / delegate / comment), ``/audit?workflow=``
(the run's audit trail). ``/fragments/...`` answer the pages' polling with fresh HTML, so a
decision made elsewhere shows up within seconds.

Every page and action needs a verified identity token (baton/inbox/auth.py); every form a CSRF
token. Must not: decide who may approve (the workflow's validator and policy do; the page only
mirrors it to explain read-only items).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from temporalio.service import RPCError

from baton.inbox.auth import (
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    DevIssuerTokens,
    Gatekeeper,
    NotSignedIn,
    Viewer,
)
from baton.inbox.backend import (
    InboxBackend,
    InboxItem,
    Outcome,
    age,
    money,
    refusal_for,
    sort_key,
    span,
    utcnow,
)
from baton.inbox.forms import amendment_fields, parse_amendments
from workflows.contracts import ApprovalRequest

TEMPLATES = Path(__file__).parent / "templates"
#: a form body larger than this is refused before it is parsed
MAX_FORM_BYTES = 256 * 1024
#: how often the pages ask for fresh HTML (milliseconds)
POLL_MS = 2000
#: rows per inbox page (the most urgent first; the title counts them all)
PAGE_ROWS = 100


@dataclass
class InboxConfig:
    backend: InboxBackend
    gatekeeper: Gatekeeper
    #: people -> {"name", "roles"} (the directory policy decides from)
    directory: dict[str, dict[str, Any]]
    #: the dev issuer, when the sign-in page may mint identity tokens (local stack only)
    dev_issuer: DevIssuerTokens | None
    #: link to a run in the Temporal Web UI: (workflow_id, run_id) -> URL
    workflow_url: Callable[[str, str | None], str]
    #: the run's audit trail as rows (None: no audit database configured)
    audit_trail: Callable[[str], list[dict[str, Any]]] | None = None
    poll_ms: int = POLL_MS
    #: why the directory could not be read (the sign-in page says so)
    directory_error: str | None = None


def request_path(workflow_id: str, request_id: str) -> str:
    """The path of one request's page (notifications carry it, after BATON_INBOX_URL)."""
    return f"/requests/{quote(request_id, safe='')}?workflow={quote(workflow_id, safe='')}"


class Refused(Exception):
    """A form POST refused before its handler acts (not signed in, cross-site, too large, a
    wrong CSRF token, no workflow in the URL): ``response`` is the page the app answers with."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def create_app(config: InboxConfig) -> FastAPI:
    app = FastAPI(title="Baton approver inbox", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused) -> Response:
        return err.response

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        enable_async=False,
    )
    env.filters["money"] = money
    env.filters["span"] = span
    env.filters["ts"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if v else ""
    env.globals["request_path"] = request_path
    env.globals["poll_ms"] = config.poll_ms
    backend = config.backend
    gate = config.gatekeeper

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(**context)
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'"
        )
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    @app.exception_handler(RPCError)
    async def temporal_did_not_answer(request: Request, err: RPCError) -> Response:
        """Temporal failed a list, query or Update: say so (503), not a bare 500; the page's
        next poll or a reload asks again."""
        message = (
            f"Temporal did not answer ({err.status.name}: {err.message}); "
            "reload the page in a moment to see the current state"
        )
        if request.url.path.startswith("/fragments/"):
            return JSONResponse({"error": message}, status_code=503)
        return render("error.html", 503, viewer=None, message=message, heading="Unavailable")

    def token_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(SESSION_COOKIE)

    def unauthorised(reason: str) -> HTMLResponse:
        response = render(
            "signed_out.html", 401, reason=reason, dev=config.dev_issuer is not None, viewer=None
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="baton-inbox"'
        return response

    def json_unauthorised(reason: str) -> JSONResponse:
        return JSONResponse({"error": reason}, status_code=401)

    def signed_in(request: Request, unsigned: Callable[[str], Response] = unauthorised) -> Viewer:
        """Who is signed in; else ``Refused`` with ``unsigned(reason)``: the 401 sign-in page
        (a live fragment's poll: ``json_unauthorised``)."""
        try:
            return gate.viewer(token_of(request))
        except NotSignedIn as err:
            raise Refused(unsigned(err.reason)) from None

    def same_origin(request: Request) -> bool:
        """A form post must come from this site (Origin/Referer, when the browser sends one)."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def form_of(request: Request) -> dict[str, list[str]]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise ValueError(f"form too large: {len(body)} bytes (at most {MAX_FORM_BYTES})")
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    async def guarded_post(request: Request) -> tuple[Viewer, dict[str, list[str]]]:
        """The viewer and form of a POST; else ``Refused`` (401 not signed in, 403 CSRF)."""
        viewer = signed_in(request)
        if not same_origin(request):
            raise Refused(
                render("error.html", 403, viewer=viewer, message="cross-site form refused")
            )
        try:
            form = await form_of(request)
        except ValueError as err:
            raise Refused(render("error.html", 413, viewer=viewer, message=str(err))) from None
        if not gate.csrf_ok(viewer, first(form, "csrf")):
            raise Refused(
                render(
                    "error.html",
                    403,
                    viewer=viewer,
                    message="the form's CSRF token is missing or wrong: reload the page and try "
                    "again",
                )
            )
        return viewer, form

    # -- sign-in -----------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_page(request: Request) -> Response:
        if config.dev_issuer is None:
            return render(
                "signed_out.html",
                401,
                reason="sign in with your identity provider: send its token as "
                "'Authorization: Bearer <token>'",
                dev=False,
                viewer=None,
            )
        nonce = request.cookies.get(SIGN_IN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = render(
            "sign_in.html",
            people=sorted(config.directory.items()),
            csrf=nonce,
            viewer=None,
            directory_error=config.directory_error,
        )
        response.set_cookie(
            SIGN_IN_CSRF_COOKIE, nonce, httponly=True, samesite="strict", max_age=3600
        )
        return response

    @app.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        if config.dev_issuer is None:
            return render("error.html", 404, viewer=None, message="no dev sign-in here")
        form = await form_of(request)
        nonce = request.cookies.get(SIGN_IN_CSRF_COOKIE)
        if not nonce or not same_origin(request) or first(form, "csrf") != nonce:
            return render("error.html", 403, viewer=None, message="sign-in form expired: reload")
        person = first(form, "person") or ""
        entry = config.directory.get(person)
        if entry is None:
            return render(
                "error.html", 400, viewer=None, message=f"{person!r} is not in the directory"
            )
        token = config.dev_issuer.sign_in_token(person, [str(r) for r in entry.get("roles", [])])
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=8 * 3600,
        )
        response.delete_cookie(SIGN_IN_CSRF_COOKIE)
        return response

    @app.post("/dev-issuer/token")
    async def dev_token_exchange(request: Request) -> Response:
        """The dev issuer's OAuth 2.0 Token Exchange (RFC 8693): a verified inbox identity
        token in, an approval token bound to one decision out. What
        BATON_INBOX_TOKEN_EXCHANGE_URL points at in production is the identity provider's;
        this one (local stack only, next to the dev sign-in) lets the exchange path run here."""
        if config.dev_issuer is None:
            return JSONResponse({"error": "not_found"}, status_code=404)

        def refused(error: str, description: str) -> JSONResponse:
            return JSONResponse({"error": error, "error_description": description}, 400)

        try:
            form = await form_of(request)
        except ValueError as err:
            return refused("invalid_request", str(err))
        if first(form, "grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return refused("unsupported_grant_type", "grant_type: token-exchange only")
        try:
            viewer = gate.viewer(first(form, "subject_token"))
        except NotSignedIn as err:
            return refused("invalid_grant", f"subject_token: {err.reason}")
        binding = {
            name: first(form, f"baton_{name}") or ""
            for name in ("workflow_id", "request_id", "action_digest")
        }
        missing = [f"baton_{k}" for k, v in binding.items() if not v]
        if missing:
            return refused("invalid_request", f"{', '.join(missing)}: required")
        token = await config.dev_issuer.approval_token(viewer, **binding)
        return JSONResponse(
            {
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_type": "N_A",
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        await guarded_post(request)
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- the inbox ---------------------------------------------------------------------------

    async def listing(viewer: Viewer, params: dict[str, str]) -> dict[str, Any]:
        now = utcnow()
        items = await backend.pending()
        processes = sorted({i.line.process for i in items})
        tenants = sorted({i.tenant for i in items if i.tenant})
        scope = params.get("scope", "mine")
        chosen: list[tuple[InboxItem, str | None]] = []
        for item in items:
            why = refusal_for(viewer, item.line)
            if scope == "mine" and why is not None:
                continue
            if params.get("process") and item.line.process != params["process"]:
                continue
            if params.get("tenant") and item.tenant != params["tenant"]:
                continue
            if params.get("q") and not matches(item, params["q"]):
                continue
            if params.get("overdue") and item.sla_left(now).total_seconds() >= 0:
                continue
            chosen.append((item, why))
        chosen.sort(key=lambda pair: sort_key(pair[0], now))
        mine = sum(1 for _, why in chosen if why is None)
        pages = max(1, -(-len(chosen) // PAGE_ROWS))
        try:
            page = min(max(1, int(params.get("page", "1"))), pages)
        except ValueError:
            page = 1
        first = (page - 1) * PAGE_ROWS
        # only the page's rows are rendered: the title counts them all
        rows = [row(item, why, viewer, now) for item, why in chosen[first : first + PAGE_ROWS]]
        return {
            "rows": rows,
            "total": len(chosen),
            "page": page,
            "pages": pages,
            "first": first,
            "pager_query": "".join(
                f"{urlencode({k: v})}&" for k, v in sorted(params.items()) if k != "page"
            ),
            "count": mine,
            "processes": processes,
            "tenants": tenants,
            "params": params,
            "scope": scope,
        }

    def row(item: InboxItem, why: str | None, viewer: Viewer, now: datetime) -> dict[str, Any]:
        line = item.line
        left = item.sla_left(now)
        return {
            "item": item,
            "line": line,
            "may_decide": why is None,
            "why": why,
            "age": span(age(item, now)),
            "sla_left": span(left),
            "overdue": left.total_seconds() < 0,
            "needs": " + ".join(f"{r.count} x {r.role}" for r in line.still_needed),
            "delegated_by": line.delegated_to.get(viewer.name),
            "value": json.dumps([line.workflow_id, line.request_id, line.action_digest]),
        }

    def params_of(request: Request) -> dict[str, str]:
        keep = ("process", "tenant", "q", "scope", "overdue", "page")
        return {k: v for k, v in request.query_params.items() if k in keep and v}

    @app.get("/", response_class=HTMLResponse)
    async def inbox(request: Request) -> Response:
        viewer = signed_in(request)
        data = await listing(viewer, params_of(request))
        return render(
            "inbox.html",
            viewer=viewer,
            csrf=gate.csrf(viewer),
            results=None,
            query=urlencode(data["params"]),
            **data,
        )

    @app.get("/fragments/inbox")
    async def inbox_fragment(request: Request) -> Response:
        viewer = signed_in(request, json_unauthorised)
        data = await listing(viewer, params_of(request))
        html = env.get_template("_rows.html").render(viewer=viewer, **data)
        return JSONResponse(
            {"count": data["count"], "html": html, "key": digest_of(html)},
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/bulk-approve", response_class=HTMLResponse)
    async def bulk_approve(request: Request) -> Response:
        viewer, form = await guarded_post(request)
        rationale = stripped(form, "rationale")
        chosen = []
        for value in form.get("item", []):
            try:
                workflow_id, request_id, action_digest = json.loads(value)
            except (ValueError, TypeError):
                return render("error.html", 400, viewer=viewer, message="malformed bulk item")
            chosen.append((str(workflow_id), str(request_id), str(action_digest)))
        results: list[Outcome] = []
        problem = None
        if not chosen:
            problem = "choose at least one request to approve"
        elif not rationale:
            problem = "rationale: a rationale is required (it goes to the audit trail)"
        else:
            for workflow_id, request_id, action_digest in chosen:
                results.append(
                    await backend.decide(
                        viewer,
                        workflow_id,
                        request_id=request_id,
                        verdict="approve",
                        rationale=rationale,
                        action_digest=action_digest,
                    )
                )
        data = await listing(viewer, {})
        return render(
            "inbox.html",
            400 if problem else 200,
            viewer=viewer,
            csrf=gate.csrf(viewer),
            results=results,
            problem=problem,
            query="",
            **data,
        )

    # -- one request ---------------------------------------------------------------------------

    async def why_closed(workflow_id: str, request_id: str) -> str:
        """Why a request is no longer pending: how it closed and by whom (the audit trail),
        else what visibility says of the run."""
        if config.audit_trail is not None:
            rows = await asyncio.to_thread(config.audit_trail, workflow_id)
            for row in reversed(rows):
                verb = CLOSING_ACTIONS.get(row["action"])
                if verb is not None and row.get("request_id") == request_id:
                    by = "" if row["actor"].startswith("baton:") else f" by {row['actor']}"
                    why = f": {row['rationale']}" if row["rationale"] else ""
                    return f"{request_id} is no longer pending: {verb}{by}{why}"
        return await backend.closed_reason(workflow_id, request_id)

    async def request_page(
        viewer: Viewer,
        workflow_id: str,
        request_id: str,
        *,
        outcome: Outcome | None = None,
        errors: dict[str, str] | None = None,
        form: dict[str, list[str]] | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        view = await backend.view(workflow_id, request_id)
        if view is None:
            reason = await why_closed(workflow_id, request_id)
            return render(
                "closed.html",
                status if outcome is not None else 404,
                viewer=viewer,
                outcome=outcome,
                reason=reason,
                workflow_id=workflow_id,
                request_id=request_id,
                workflow_url=config.workflow_url(workflow_id, None),
            )
        why = refusal_for(viewer, view.item.line)
        request: ApprovalRequest | None = view.request
        line = view.item.line
        delegates = [
            (person, entry)
            for person, entry in sorted(config.directory.items())
            if set(entry.get("roles", [])) & set(line.approver_roles)
            and person not in (viewer.name, line.requested_by, *line.approved_by)
        ]
        return render(
            "request.html",
            status,
            viewer=viewer,
            csrf=gate.csrf(viewer),
            view=view,
            line=line,
            request=request,
            why=why,
            outcome=outcome,
            errors=errors or {},
            form=form or {},
            fields=amendment_fields(request) if request is not None else [],
            delegates=delegates,
            now=utcnow(),
            workflow_url=config.workflow_url(workflow_id, view.item.run_id),
            audit_url=f"/audit?workflow={quote(workflow_id, safe='')}",
            live=live_context(viewer, view.item, request),
        )

    def live_context(
        viewer: Viewer, item: InboxItem, request: ApprovalRequest | None
    ) -> dict[str, Any]:
        line = item.line
        return {
            "line": line,
            "request": request,
            "approvals": request.approvals if request else [],
            "comments": request.comments if request else [],
            "delegations": request.delegations if request else [],
            "needs": " + ".join(f"{r.count} x {r.role}" for r in line.still_needed),
            "sla_left": span(item.sla_left(utcnow())),
            "overdue": item.sla_left(utcnow()).total_seconds() < 0,
        }

    def ids_of(request: Request, request_id: str) -> tuple[str, str] | None:
        workflow_id = request.query_params.get("workflow")
        return (workflow_id, request_id) if workflow_id else None

    def no_workflow(viewer: Viewer) -> Response:
        return render("error.html", 400, viewer=viewer, message="workflow: missing in the URL")

    async def guarded_request_post(
        request: Request, request_id: str
    ) -> tuple[Viewer, dict[str, list[str]], tuple[str, str]]:
        """``guarded_post`` of a form on one request: also its (workflow, request) ids (else
        ``Refused`` with 400)."""
        viewer, form = await guarded_post(request)
        ids = ids_of(request, request_id)
        if ids is None:
            raise Refused(no_workflow(viewer))
        return viewer, form, ids

    async def page_after(
        viewer: Viewer, ids: tuple[str, str], sent: Awaitable[Outcome], *, invalid_under: str
    ) -> Response:
        """The request's page once ``sent`` (a comment or delegation) is awaited: its outcome
        (409 when the workflow refused it), or 400 with the validation error shown under the
        form field ``invalid_under``."""
        try:
            outcome = await sent
        except ValidationError as err:
            return await request_page(
                viewer, *ids, errors={invalid_under: validation_text(err)}, status=400
            )
        return await request_page(
            viewer, *ids, outcome=outcome, status=200 if outcome.accepted else 409
        )

    @app.get("/requests/{request_id}", response_class=HTMLResponse)
    async def show_request(request: Request, request_id: str) -> Response:
        viewer = signed_in(request)
        ids = ids_of(request, request_id)
        if ids is None:
            return no_workflow(viewer)
        return await request_page(viewer, *ids)

    @app.get("/fragments/request")
    async def request_fragment(request: Request) -> Response:
        viewer = signed_in(request, json_unauthorised)
        workflow_id = request.query_params.get("workflow", "")
        request_id = request.query_params.get("id", "")
        view = await backend.view(workflow_id, request_id)
        if view is None:
            reason = await why_closed(workflow_id, request_id)
            return JSONResponse({"open": False, "reason": reason, "key": reason})
        html = env.get_template("_live.html").render(
            viewer=viewer, live=live_context(viewer, view.item, view.request)
        )
        return JSONResponse(
            {
                "open": True,
                "digest": view.item.line.action_digest,
                "html": html,
                "key": digest_of(html),
            },
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/requests/{request_id}/decide", response_class=HTMLResponse)
    async def decide(request: Request, request_id: str) -> Response:
        viewer, form, ids = await guarded_request_post(request, request_id)
        workflow_id, _ = ids
        verdict = first(form, "verdict") or ""
        rationale = stripped(form, "rationale")
        action_digest = first(form, "digest") or ""
        errors: dict[str, str] = {}
        if verdict not in ("approve", "reject", "amend", "request_changes"):
            errors["verdict"] = "verdict: one of approve, reject, amend, request_changes"
        if not rationale:
            errors["rationale"] = "rationale: required (it goes to the audit trail)"
        amendments: list[dict[str, Any]] = []
        if verdict == "amend" and not errors:
            view = await backend.view(workflow_id, request_id)
            if view is None or view.request is None:
                errors["amend"] = "amend: the request's entries cannot be read now"
            else:
                amendments, amend_errors = parse_amendments(view.request, form)
                errors.update(amend_errors)
        if errors:
            return await request_page(
                viewer, workflow_id, request_id, errors=errors, form=form, status=400
            )
        try:
            outcome = await backend.decide(
                viewer,
                workflow_id,
                request_id=request_id,
                verdict=verdict,
                rationale=rationale,
                action_digest=action_digest,
                amendments=amendments,
            )
        except ValidationError as err:
            return await request_page(
                viewer,
                workflow_id,
                request_id,
                errors={"form": validation_text(err)},
                form=form,
                status=400,
            )
        return await request_page(
            viewer,
            workflow_id,
            request_id,
            outcome=outcome,
            form={} if outcome.accepted else form,
            status=200 if outcome.accepted else 409,
        )

    @app.post("/requests/{request_id}/comment", response_class=HTMLResponse)
    async def comment(request: Request, request_id: str) -> Response:
        viewer, form, ids = await guarded_request_post(request, request_id)
        text = stripped(form, "text")
        if not text:
            return await request_page(
                viewer, *ids, errors={"comment": "comment: write something"}, status=400
            )
        sent = backend.comment(
            viewer, ids[0], request_id=request_id, text=text, action_digest=first_digest(form)
        )
        return await page_after(viewer, ids, sent, invalid_under="comment")

    @app.post("/requests/{request_id}/delegate", response_class=HTMLResponse)
    async def delegate(request: Request, request_id: str) -> Response:
        viewer, form, ids = await guarded_request_post(request, request_id)
        to = stripped(form, "delegate")
        rationale = stripped(form, "rationale")
        errors = {}
        if not to:
            errors["delegate"] = "delegate: choose who receives the request"
        if not rationale:
            errors["delegate_rationale"] = "rationale: required (it goes to the audit trail)"
        if errors:
            return await request_page(viewer, *ids, errors=errors, form=form, status=400)
        sent = backend.delegate(
            viewer,
            ids[0],
            request_id=request_id,
            delegate=to,
            rationale=rationale,
            action_digest=first_digest(form),
        )
        return await page_after(viewer, ids, sent, invalid_under="delegate")

    # -- audit trail -----------------------------------------------------------------------------

    @app.get("/audit", response_class=HTMLResponse)
    async def audit(request: Request) -> Response:
        viewer = signed_in(request)
        workflow_id = request.query_params.get("workflow", "")
        if config.audit_trail is None:
            return render(
                "error.html", 404, viewer=viewer, message="no audit database is configured"
            )
        rows = config.audit_trail(workflow_id)
        return render(
            "audit.html",
            viewer=viewer,
            workflow_id=workflow_id,
            rows=rows,
            workflow_url=config.workflow_url(workflow_id, None),
        )

    return app


#: audit actions that close a request, as the page words them
CLOSING_ACTIONS = {
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.amended": "amended",
    "approval.changes_requested": "sent back with requested changes",
    "approval.expired": "expired",
    "approval.withdrawn": "withdrawn",
}


def first(form: dict[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


def stripped(form: dict[str, list[str]], key: str) -> str:
    """A form field's first value without surrounding white space; "" when it is missing."""
    return (first(form, key) or "").strip()


def first_digest(form: dict[str, list[str]]) -> str:
    return first(form, "digest") or ""


def matches(item: InboxItem, needle: str) -> bool:
    line = item.line
    hay = " ".join(
        [
            line.workflow_id,
            line.request_id,
            line.summary,
            line.process,
            line.requested_by,
            item.tenant,
            line.action,
        ]
    ).lower()
    return all(word in hay for word in needle.lower().split())


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def validation_text(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors()
    )
