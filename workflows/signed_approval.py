"""Signed approvals: verify an approver's identity assertion (a JWT) without I/O or a clock.

The approval gate calls :func:`verify_assertion` from the Update validator and the Signal handler,
so it must be deterministic: the issuer's public keys come with the run's input
(:class:`ApprovalTrust`), the time is the caller's (``workflow.now()`` in a workflow), and
nothing is fetched. Checked: compact JWS form, algorithm EdDSA (Ed25519) only, a known key id,
the signature, ``iss``, ``aud``, ``exp`` / ``nbf`` (with the trust's leeway), ``sub`` and the roles
claim. Tokens are issued by any standard JWT library (``baton token issue`` uses PyJWT).

The same function serves the codec server (baton/codec_server.py) with the wall clock.

An *approval* token must say more than who is asking (:func:`approver_refusal`): it is bound to
one decision by the claims in :data:`BINDING_CLAIMS` (the workflow id, the approval request id
and the action digest), lives minutes (``ApprovalTrust.max_token_seconds``) and carries a
``jti``, which the approval gate accepts once per run.

The token must not be readable in workflow history, where anyone who can read histories would
copy it. The Update's input is written to history once accepted, so the client *seals* the
token to the workers' X25519 key (:func:`seal_assertion`: ephemeral X25519 + HKDF-SHA256 +
AES-256-GCM) and only workers, holding the private key, open it (:func:`unseal_assertion`,
deterministic, so replay sees the same token). History then holds an opaque blob that is only
good for the one decision it was made for, once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.contracts.security import ApprovalTrust

with workflow.unsafe.imports_passed_through():
    from cryptography.exceptions import InvalidSignature, InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: refuse absurd tokens before parsing them (a real one is ~400 bytes)
MAX_TOKEN_CHARS = 8192

#: The claims that bind an approval token to one decision: decision field -> JWT claim.
BINDING_CLAIMS = {
    "workflow_id": "baton_workflow_id",
    "request_id": "baton_request_id",
    "action_digest": "baton_action_digest",
}

#: A sealed token: prefix, ephemeral X25519 public key, nonce + AES-GCM ciphertext (base64url).
SEALED_PREFIX = "baton-sealed.v1."
_SEAL_INFO = b"baton-approval-seal/v1"


class AssertionRefused(ValueError):
    """The assertion is missing, malformed, forged, expired or for someone else; says which."""


@dataclass(frozen=True)
class VerifiedIdentity:
    subject: str
    roles: tuple[str, ...]
    key_id: str
    token_id: str | None
    issuer: str = ""
    #: sha256 of the compact token: what the audit trail keeps instead of the token
    token_digest: str = ""
    claims: dict[str, Any] | None = None

    def audit_detail(self) -> dict[str, str]:
        """What the audit trail records of a verified token: never the token itself."""
        detail = {
            "signed_by": f"{self.issuer}#{self.key_id}",
            "token_subject": self.subject,
            "token_sha256": self.token_digest,
        }
        return detail | ({"token_id": self.token_id} if self.token_id else {})


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
        issuer=trust.issuer,
        token_digest=hashlib.sha256(token.encode("ascii")).hexdigest(),
        claims=claims,
    )


def approver_refusal(
    token: str | None,
    trust: ApprovalTrust,
    now: datetime,
    *,
    approver: str,
    acceptable_roles: list[str] | None,
    binding: dict[str, str] | None = None,
) -> tuple[str | None, VerifiedIdentity | None]:
    """Why a decision by ``approver`` carrying ``token`` must be refused (None if it may go on):
    the token must verify, name ``approver`` as its subject and carry one of
    ``acceptable_roles`` (None: roles are not checked). With ``binding`` (decision field ->
    value, see :data:`BINDING_CLAIMS`) it is an approval token: it must carry each binding
    claim with that value, a ``jti``, and live at most ``trust.max_token_seconds``. Returns the
    verified identity too."""
    try:
        identity = verify_assertion(token, trust, now)
    except AssertionRefused as err:
        return str(err), None
    if binding is not None:
        refusal = _binding_refusal(identity, trust, now, binding)
        if refusal is not None:
            return refusal, identity
    if identity.subject != approver:
        return (
            f"identity assertion is for {identity.subject!r}, but the decision is made as "
            f"{approver!r}",
            identity,
        )
    if acceptable_roles is not None and not set(identity.roles) & set(acceptable_roles):
        return (
            f"identity assertion of {approver} carries roles {list(identity.roles)}; this request "
            f"needs one of {acceptable_roles}",
            identity,
        )
    return None, identity


def _binding_refusal(
    identity: VerifiedIdentity, trust: ApprovalTrust, now: datetime, binding: dict[str, str]
) -> str | None:
    claims = identity.claims or {}
    for field, claim in BINDING_CLAIMS.items():
        if field not in binding:
            continue
        if claims.get(claim) != binding[field]:
            got = claims.get(claim)
            return (
                f"approval token is bound to {field} {got!r} (claim {claim!r}), not "
                f"{binding[field]!r}: a token approves only the decision it was issued for"
                if got is not None
                else f"approval token carries no {claim!r} claim: approval tokens must be bound "
                "to the workflow id, the request id and the action digest"
            )
    if not identity.token_id:
        return "approval token has no 'jti' (token id): each approval token is used once"
    exp = float(claims["exp"])
    iat = claims.get("iat")
    start = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None
    lifetime = exp - (start if start is not None else now.timestamp())
    if lifetime > trust.max_token_seconds + trust.leeway_seconds:
        return (
            f"approval token lives {int(lifetime)} s; approval tokens may live at most "
            f"{trust.max_token_seconds} s (max_token_seconds of the trust file)"
        )
    return None


def seal_assertion(token: str, seal_key: str) -> str:
    """``token`` encrypted to the workers' X25519 public key ``seal_key`` (base64url): what a
    client sends instead of the token. Not for workflow code (it draws random bytes)."""
    recipient = X25519PublicKey.from_public_bytes(_b64url(seal_key, "seal key"))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    key = _seal_cipher_key(ephemeral.exchange(recipient), ephemeral_public, recipient)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, token.encode("ascii"), _SEAL_INFO)
    return SEALED_PREFIX + _text(ephemeral_public) + "." + _text(nonce + sealed)


def unseal_assertion(assertion: str, seal_key: X25519PrivateKey | None) -> str:
    """The token inside a sealed ``assertion`` (a plain token is returned as it is); raises
    :class:`AssertionRefused` when it cannot be opened. Deterministic: workflow code may call
    it (the private key comes from the worker, never from history)."""
    if not assertion.startswith(SEALED_PREFIX):
        return assertion
    if seal_key is None:
        raise AssertionRefused(
            "the approval token is sealed, but this worker holds no seal key "
            "(BATON_APPROVAL_SEAL_KEY)"
        )
    if len(assertion) > 2 * MAX_TOKEN_CHARS:
        raise AssertionRefused("sealed approval token is too long")
    parts = assertion.removeprefix(SEALED_PREFIX).split(".")
    if len(parts) != 2:
        raise AssertionRefused("sealed approval token is malformed")
    ephemeral_public = _b64url(parts[0], "seal")
    box = _b64url(parts[1], "seal")
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_public)
        key = _seal_cipher_key(seal_key.exchange(peer), ephemeral_public, seal_key.public_key())
        token = AESGCM(key).decrypt(box[:12], box[12:], _SEAL_INFO)
        return token.decode("ascii")
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise AssertionRefused(
            "sealed approval token does not open with this worker's seal key: sealed to "
            "another key, or altered"
        ) from None


def _seal_cipher_key(shared: bytes, ephemeral_public: bytes, recipient: X25519PublicKey) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_SEAL_INFO + ephemeral_public + recipient.public_bytes_raw(),
    ).derive(shared)


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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


#: ApplicationError type of a run refused because its input names an issuer of its own
TRUST_REFUSED_ERROR = "ApprovalTrustRefused"
#: workflow.patched() id of the refusal: runs started before it keep the trust they had
TRUST_REFUSED_PATCH = "worker-approval-trust-wins"


def trust_refusal(worker: ApprovalTrust, given: ApprovalTrust | None) -> str | None:
    """Why a run whose input carries ``given`` must not run on a worker configured with
    ``worker`` (None when it may). The worker's trust always wins: a starter must not bring an
    issuer (or a key) of its own, or it could mint tokens for any approver."""
    if given is None or worker.admits(given):
        return None
    return (
        f"input field approval_trust names issuer {given.issuer!r} (audience "
        f"{given.audience!r}, keys {', '.join(sorted(given.keys))}), which this worker's "
        f"BATON_APPROVAL_TRUST (issuer {worker.issuer!r}, keys "
        f"{', '.join(sorted(worker.keys))}) does not grant: the worker decides who vouches for "
        "approvers. Start the run without approval_trust, or with the worker's trust file"
    )


class RequireSignedApprovals(Interceptor):
    """Worker interceptor: every run on this worker uses the worker's ``trust``
    (BATON_APPROVAL_TRUST), whatever its input says. A run whose input names no issuer gets it
    (signatures cannot be switched off by omitting it); a run whose input names another issuer
    or key is refused at its first workflow task with :data:`TRUST_REFUSED_ERROR` (it could
    otherwise approve with tokens it minted itself). ``seal_key`` (BATON_APPROVAL_SEAL_KEY)
    opens sealed approval tokens; it stays in worker memory and never enters history.

    Changing the trust on workers with open runs is like a code change (a replayed refused
    signal would now be accepted): drain or version first."""

    def __init__(self, trust: ApprovalTrust, seal_key: X25519PrivateKey | None = None) -> None:
        self.trust = trust
        self.seal_key = seal_key

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        trust = self.trust
        seal_key = self.seal_key

        class _Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                gate = getattr(workflow.instance(), "gate", None)
                if gate is not None and hasattr(gate, "trust"):
                    refusal = trust_refusal(trust, gate.trust)
                    if refusal is not None:
                        if workflow.patched(TRUST_REFUSED_PATCH):
                            raise ApplicationError(
                                refusal, type=TRUST_REFUSED_ERROR, non_retryable=True
                            )
                        return await super().execute_workflow(input)  # started before the rule
                    gate.trust = trust
                    gate.seal_key = seal_key
                return await super().execute_workflow(input)

        return _Inbound


__all__ = [
    "AssertionRefused",
    "BINDING_CLAIMS",
    "MAX_TOKEN_CHARS",
    "RequireSignedApprovals",
    "SEALED_PREFIX",
    "TRUST_REFUSED_ERROR",
    "TRUST_REFUSED_PATCH",
    "VerifiedIdentity",
    "approver_refusal",
    "seal_assertion",
    "trust_refusal",
    "unseal_assertion",
    "verify_assertion",
]
