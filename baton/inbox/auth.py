"""Who is signed in to the approver inbox, and the tokens that carry their decisions.

Sign-in is a signed identity token (a JWT, EdDSA) from the configured issuer, audience
``baton-inbox`` (:data:`INBOX_AUDIENCE`), sent as ``Authorization: Bearer`` or kept in an
HttpOnly, SameSite=Strict cookie after the sign-in page. It is verified on every request with
the same verifier the workflows use (workflows/signed_approval.py), against the approval trust
file (BATON_APPROVAL_TRUST) or, on the local stack, the dev issuer's.

A decision does not travel with the identity token: workflows take approval tokens bound to one
decision (workflow id, request id, action digest; minutes; a ``jti`` used once). An
:class:`ApprovalTokenSource` turns a signed-in identity into such a token for each decision. On
the local stack that is the dev issuer (:class:`DevIssuerTokens`, which holds the signing key);
in production, the identity provider's token exchange (RFC 8693) does it
(:class:`TokenExchange`), so the inbox itself never holds a key that approves.

CSRF: every form carries a token derived (HMAC) from the server's secret and the signed-in
identity token, so a page of another site cannot post a decision; the sign-in form uses a
double-submit cookie. Must not: reach Temporal (baton/inbox/backend.py does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx

from baton.identity import issue_token
from workflows.contracts.security import ApprovalTrust
from workflows.signed_approval import AssertionRefused, VerifiedIdentity, verify_assertion

INBOX_AUDIENCE = "baton-inbox"
SESSION_COOKIE = "baton_inbox_identity"
SIGN_IN_CSRF_COOKIE = "baton_inbox_sign_in"
#: how long a dev sign-in lasts (a working day)
DEV_SESSION_SECONDS = 8 * 3600


class NotSignedIn(Exception):
    """No identity token, or one that does not verify; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Viewer:
    """The signed-in person: their verified identity and the token that proved it."""

    identity: VerifiedIdentity
    token: str

    @property
    def name(self) -> str:
        return self.identity.subject

    @property
    def roles(self) -> tuple[str, ...]:
        return self.identity.roles


class ApprovalTokenSource(Protocol):
    """Mints the approval token of one decision for a signed-in viewer."""

    async def approval_token(
        self, viewer: Viewer, *, workflow_id: str, request_id: str, action_digest: str
    ) -> str: ...


class DevIssuerTokens:
    """The local dev issuer (``baton token init``): signs bound approval tokens itself. For the
    local stack and tests only: whoever runs it holds a key that can approve as anyone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def approval_token(
        self, viewer: Viewer, *, workflow_id: str, request_id: str, action_digest: str
    ) -> str:
        return issue_token(
            self.directory,
            user=viewer.name,
            roles=list(viewer.roles) or ["none"],
            workflow_id=workflow_id,
            request_id=request_id,
            action_digest=action_digest,
        )

    def sign_in_token(self, person: str, roles: list[str]) -> str:
        """An identity token for the inbox (the dev sign-in page)."""
        return issue_token(
            self.directory,
            user=person,
            roles=roles or ["none"],
            audience=INBOX_AUDIENCE,
            ttl_seconds=DEV_SESSION_SECONDS,
        )


class TokenExchange:
    """OAuth 2.0 Token Exchange (RFC 8693) at the identity provider: the viewer's identity token
    is the subject token; the binding travels as the requested ``resource`` parameters
    (``baton_workflow_id``, ``baton_request_id``, ``baton_action_digest``), which the provider
    copies into the approval token's claims."""

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.client = client or httpx.AsyncClient(timeout=10)

    async def approval_token(
        self, viewer: Viewer, *, workflow_id: str, request_id: str, action_digest: str
    ) -> str:
        answer = await self.client.post(
            self.url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": viewer.token,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "requested_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "audience": "baton-approvals",
                "baton_workflow_id": workflow_id,
                "baton_request_id": request_id,
                "baton_action_digest": action_digest,
            },
        )
        if answer.status_code != 200:
            raise AssertionRefused(
                f"the token exchange at {self.url} refused: HTTP {answer.status_code} "
                f"{answer.text[:200]}"
            )
        token = answer.json().get("access_token")
        if not isinstance(token, str):
            raise AssertionRefused(f"the token exchange at {self.url} returned no access_token")
        return token


class Gatekeeper:
    """Verifies sign-ins and CSRF tokens for one inbox server."""

    def __init__(self, trust: ApprovalTrust, *, secret: bytes | None = None) -> None:
        self.trust = trust.model_copy(update={"audience": INBOX_AUDIENCE})
        self.secret = secret or secrets.token_bytes(32)

    def viewer(self, token: str | None, now: datetime | None = None) -> Viewer:
        """The verified viewer of ``token``, or :class:`NotSignedIn` with the reason."""
        if not token:
            raise NotSignedIn("sign in first: no identity token")
        try:
            identity = verify_assertion(token, self.trust, now or datetime.now(UTC))
        except AssertionRefused as err:
            raise NotSignedIn(f"identity token refused: {err}") from None
        return Viewer(identity=identity, token=token)

    def csrf(self, viewer: Viewer) -> str:
        """The CSRF token of ``viewer``'s forms (stable for the life of the sign-in)."""
        key = hashlib.sha256(viewer.token.encode()).digest()
        return hmac.new(self.secret, b"csrf:" + key, hashlib.sha256).hexdigest()

    def csrf_ok(self, viewer: Viewer, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(viewer), given or "")


def load_directory(policy_dir: Path) -> dict[str, dict[str, object]]:
    """The people directory policy decides from (policy/data/directory.json): person ->
    {"name": ..., "roles": [...]}. The dev sign-in page offers these people."""
    path = policy_dir / "data" / "directory.json"
    try:
        data = json.loads(path.read_text())
        people = data["baton"]["directory"]["people"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"the people directory {path} is unreadable: {err}") from None
    return {str(k): dict(v) for k, v in people.items()}
