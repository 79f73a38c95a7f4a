"""Signed approvals: verify an approver's identity assertion (a JWT) without I/O or a clock.

The approval gate calls :func:`verify_assertion` from the Update validator and the Signal handler,
so it must be deterministic: the issuer's public keys come with the run's input
(:class:`ApprovalTrust`), the time is the caller's (``workflow.now()`` in a workflow), and
nothing is fetched. Checked: compact JWS form, algorithm EdDSA (Ed25519) only, a known key id,
the signature, ``iss``, ``aud``, ``exp`` / ``nbf`` (with the trust's leeway), ``sub`` and the roles
claim. Tokens are issued by any standard JWT library (``baton token issue`` uses PyJWT).

The same function serves the codec server (baton/codec_server.py) with the wall clock.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.contracts_security import ApprovalTrust

with workflow.unsafe.imports_passed_through():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: refuse absurd tokens before parsing them (a real one is ~400 bytes)
MAX_TOKEN_CHARS = 8192


class AssertionRefused(ValueError):
    """The assertion is missing, malformed, forged, expired or for someone else; says which."""


@dataclass(frozen=True)
class VerifiedIdentity:
    subject: str
    roles: tuple[str, ...]
    key_id: str
    token_id: str | None


def verify_assertion(token: str | None, trust: ApprovalTrust, now: datetime) -> VerifiedIdentity:
    """The identity ``token`` asserts, or :class:`AssertionRefused` saying what is wrong."""
    if not token:
        raise AssertionRefused(
            f"a signed identity assertion (JWT from {trust.issuer}) is required; "
            "get one with `baton token issue --user <you> --role <role>` and pass --token "
            "(or BATON_APPROVAL_TOKEN)"
        )
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise AssertionRefused("identity assertion is not a compact JWT")
    parts = token.split(".")
    if len(parts) != 3:
        raise AssertionRefused("identity assertion is not a compact JWT (header.payload.signature)")
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "payload")
    signature = _b64url(parts[2], "signature")
    if header.get("alg") != "EdDSA":
        raise AssertionRefused(f"identity assertion algorithm {header.get('alg')!r} refused: EdDSA")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in trust.keys:
        raise AssertionRefused(
            f"identity assertion signed with unknown key id {kid!r} "
            f"(issuer {trust.issuer} keys: {', '.join(sorted(trust.keys))})"
        )
    public = Ed25519PublicKey.from_public_bytes(_b64url(trust.keys[kid], "key"))
    try:
        public.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature:
        raise AssertionRefused(
            f"identity assertion signature does not verify with {trust.issuer} key {kid}: forged "
            "or altered"
        ) from None
    if claims.get("iss") != trust.issuer:
        raise AssertionRefused(
            f"identity assertion issuer {claims.get('iss')!r} is not {trust.issuer!r}"
        )
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if trust.audience not in audiences:
        raise AssertionRefused(
            f"identity assertion audience {audience!r} does not include {trust.audience!r}"
        )
    at = now.timestamp()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionRefused("identity assertion has no numeric 'exp' (expiry)")
    if at > exp + trust.leeway_seconds:
        raise AssertionRefused(
            f"identity assertion expired at {datetime.fromtimestamp(exp, now.tzinfo).isoformat()}"
        )
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and at + trust.leeway_seconds < nbf:
        raise AssertionRefused("identity assertion is not valid yet ('nbf' in the future)")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AssertionRefused("identity assertion names no subject ('sub')")
    roles = claims.get(trust.roles_claim, [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AssertionRefused(f"identity assertion claim {trust.roles_claim!r} must list strings")
    jti = claims.get("jti")
    return VerifiedIdentity(
        subject=subject,
        roles=tuple(roles),
        key_id=kid,
        token_id=jti if isinstance(jti, str) else None,
    )


def approver_refusal(
    token: str | None,
    trust: ApprovalTrust,
    now: datetime,
    *,
    approver: str,
    acceptable_roles: list[str],
) -> tuple[str | None, VerifiedIdentity | None]:
    """Why a decision by ``approver`` carrying ``token`` must be refused (None if it may go on):
    the token must verify, name ``approver`` as its subject and carry one of
    ``acceptable_roles``. Returns the verified identity too."""
    try:
        identity = verify_assertion(token, trust, now)
    except AssertionRefused as err:
        return str(err), None
    if identity.subject != approver:
        return (
            f"identity assertion is for {identity.subject!r}, but the decision is made as "
            f"{approver!r}",
            identity,
        )
    if not set(identity.roles) & set(acceptable_roles):
        return (
            f"identity assertion of {approver} carries roles {list(identity.roles)}; this request "
            f"needs one of {acceptable_roles}",
            identity,
        )
    return None, identity


def _b64url(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AssertionRefused(f"identity assertion {what} is not base64url") from None


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(text, what))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AssertionRefused(f"identity assertion {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AssertionRefused(f"identity assertion {what} is not a JSON object")
    return value


class RequireSignedApprovals(Interceptor):
    """Worker interceptor: runs on this worker get ``trust`` when their input names no issuer,
    so signed approvals are enforced by the worker's configuration (BATON_APPROVAL_TRUST), not
    only by the starter's. Changing it on workers with open runs is like a code change (a
    replayed refused signal would now be accepted): drain or version first."""

    def __init__(self, trust: ApprovalTrust) -> None:
        self.trust = trust

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        trust = self.trust

        class _Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                gate = getattr(workflow.instance(), "gate", None)
                if gate is not None and getattr(gate, "trust", False) is None:
                    gate.trust = trust
                return await super().execute_workflow(input)

        return _Inbound


__all__ = [
    "AssertionRefused",
    "MAX_TOKEN_CHARS",
    "RequireSignedApprovals",
    "VerifiedIdentity",
    "approver_refusal",
    "verify_assertion",
]
