"""`baton inbox serve`: build the approver inbox from Settings and run it with uvicorn.

The composition root of the inbox: settings -> Temporal client, trust, token source, audit
ledger -> :func:`baton.inbox.app.create_app`. Which issuer signs people in:

* BATON_APPROVAL_TRUST set: that issuer's keys verify identity tokens (audience
  ``baton-inbox``); decisions get their approval tokens from BATON_INBOX_TOKEN_EXCHANGE_URL (the
  identity provider's RFC 8693 token exchange) or, when the trust is the local dev issuer's and
  its signing key is in BATON_ISSUER_DIR, from the dev issuer itself.
* unset (unsigned approvals on the workers): the local dev issuer in BATON_ISSUER_DIR signs
  people in (made on first use); decisions carry no token, as the workers take none.

The dev sign-in page (pick a person from the directory) exists only with the dev issuer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from baton.identity import DEV_ISSUER, SIGNING_KEY_FILE, init_dev_issuer
from baton.inbox.app import InboxConfig, create_app
from baton.inbox.auth import (
    ApprovalTokenSource,
    DevIssuerTokens,
    Gatekeeper,
    TokenExchange,
    load_directory,
)
from baton.inbox.backend import InboxBackend
from baton.settings import Settings


async def build_config(
    settings: Settings, *, task_queue: str | None = None, client: Any = None
) -> InboxConfig:
    from workflows.client import connect_client

    trust = settings.approval_trust()
    issuer_key = settings.issuer_dir / SIGNING_KEY_FILE
    dev: DevIssuerTokens | None = None
    if trust is None:
        identity_trust = init_dev_issuer(settings.issuer_dir).trust
        dev = DevIssuerTokens(settings.issuer_dir)
    else:
        identity_trust = trust
        if trust.issuer == DEV_ISSUER and issuer_key.exists():
            dev = DevIssuerTokens(settings.issuer_dir)
    tokens: ApprovalTokenSource | None = dev
    if settings.inbox_token_exchange_url:
        tokens = TokenExchange(settings.inbox_token_exchange_url)
    if trust is not None and tokens is None:
        raise ValueError(
            "BATON_APPROVAL_TRUST names an issuer other than the local dev issuer: set "
            "BATON_INBOX_TOKEN_EXCHANGE_URL to its token exchange, so the inbox can get "
            "approval tokens for the people who sign in"
        )
    if client is None:
        client = await _connect(settings, connect_client)
    backend = InboxBackend(client, trust=trust, tokens=tokens, task_queue=task_queue)
    try:
        directory, directory_error = load_directory(settings.policy_dir), None
    except ValueError as err:  # sign-in by bearer token still works; the page says why not
        directory, directory_error = {}, str(err)
    return InboxConfig(
        backend=backend,
        gatekeeper=Gatekeeper(identity_trust),
        directory=directory,
        directory_error=directory_error,
        dev_issuer=dev,
        workflow_url=settings.workflow_url,
        audit_trail=audit_reader(settings),
    )


async def _connect(settings: Settings, connect: Any, wait_seconds: float = 60.0) -> Any:
    """Connect to Temporal, waiting for it a while: `make up` starts the inbox together with
    the dev server, which takes a few seconds to listen."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await connect(
                None if settings.temporal_profile else settings.temporal_address,
                namespace=settings.temporal_namespace,
                profile=settings.temporal_profile,
                payload_codec=settings.payload_codec(),
            )
        except RuntimeError as err:  # the SDK's "Failed client connect"
            if time.monotonic() > deadline:
                raise ValueError(
                    f"cannot reach Temporal at {settings.temporal_address}: {err}"
                ) from None
            await asyncio.sleep(1)


def audit_reader(settings: Settings) -> Any:
    """The audit trail of a run, read from the ledger (read-only) for the audit page."""
    from activities.audit import AuditLedger
    from activities.database import Database

    db = Database(settings.database_url)
    db.create_tables()
    ledger = AuditLedger(db)

    def trail(workflow_id: str) -> list[dict[str, Any]]:
        rows = []
        for r in ledger.trail(workflow_id):
            detail = json.loads(r.detail_json)
            rows.append(
                {
                    "position": r.position,
                    "recorded_at": r.recorded_at,
                    "actor": r.actor,
                    "action": r.action,
                    "detail": ", ".join(
                        f"{k}={v}" for k, v in detail.items() if not isinstance(v, list | dict)
                    ),
                    "rationale": r.rationale or "",
                    "request_id": detail.get("request_id"),
                }
            )
        return rows

    return trail


async def serve(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None) -> None:
    import uvicorn

    config = await build_config(settings, task_queue=None)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port or settings.inbox_port, log_level="info", access_log=False
        )
    )
    print(f"approver inbox on http://{host}:{port or settings.inbox_port}", flush=True)
    await server.serve()
