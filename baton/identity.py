"""The local dev issuer of signed identity assertions (JWTs) and the trust file that names it.

Production points BATON_APPROVAL_TRUST at a trust file for the company's identity provider (its
issuer, the audience, its Ed25519 public keys by key id). The local stack has a dev issuer so the
demo works without one: ``baton token init`` generates an Ed25519 key into the local state dir
(``.baton/issuer/``, never committed) and writes the matching trust file beside it;
``baton token issue --user alice --role finance-controller`` signs a token with it (PyJWT).

Key rotation: ``baton token init --rotate`` makes a new signing key and keeps the old public keys
in the trust file, so tokens signed before the rotation still verify until they expire.

Must not: be imported by workflow code (it reads files and the clock).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from activities.keys import load_x25519_key, private_pem
from baton.devstack.local import private_dir
from workflows.contracts.security import ApprovalTrust
from workflows.signed_approval import BINDING_CLAIMS

DEV_ISSUER = "baton-dev-issuer"
APPROVAL_AUDIENCE = "baton-approvals"
CODEC_AUDIENCE = "baton-codec"
SIGNING_KEY_FILE = "signing-key.pem"
TRUST_FILE = "trust.json"
SEAL_KEY_FILE = "seal-key.pem"
#: Default lifetime of a dev approval token: minutes, not an hour (the trust's
#: max_token_seconds refuses longer ones)
APPROVAL_TOKEN_TTL = 300


@dataclass(frozen=True)
class DevIssuer:
    directory: Path
    trust: ApprovalTrust
    key_id: str

    @property
    def trust_file(self) -> Path:
        return self.directory / TRUST_FILE


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PrivateKey) -> str:
    return "dev-" + hashlib.sha256(_public_raw(key)).hexdigest()[:12]


def load_trust(path: Path) -> ApprovalTrust:
    """The trust file at ``path``; a clear error naming BATON_APPROVAL_TRUST when unusable."""
    try:
        return ApprovalTrust.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"BATON_APPROVAL_TRUST names {path}, which does not exist "
            "(the local dev issuer writes one with `baton token init`)"
        ) from None
    except ValidationError as err:
        raise ValueError(
            f"BATON_APPROVAL_TRUST file {path} is not a valid trust file: {err}"
        ) from None


def init_dev_issuer(directory: Path, *, rotate: bool = False, seal: bool = False) -> DevIssuer:
    """Create (or, with ``rotate``, replace) the dev signing key and write the trust file.

    ``seal``: also make the workers' seal key (``seal-key.pem``, X25519, mode 0600; point
    BATON_APPROVAL_SEAL_KEY at it) and put its public half in the trust file, so clients seal
    approval tokens and they never enter workflow history in clear. An existing seal key is
    kept. Idempotent without ``rotate``: an existing signing key is kept."""
    private_dir(directory)  # signing and seal keys: the owner's only
    if directory.parent.name == ".baton":
        private_dir(directory.parent)
    key_path = directory / SIGNING_KEY_FILE
    trust_path = directory / TRUST_FILE
    known: dict[str, str] = {}
    seal_public: str | None = None
    if trust_path.exists():
        existing = load_trust(trust_path)
        known = dict(existing.keys)
        seal_public = existing.seal_key
    seal_path = directory / SEAL_KEY_FILE
    if seal or seal_path.exists():
        seal_public = _b64url(_seal_key(seal_path).public_key().public_bytes_raw())
    if key_path.exists() and not rotate:
        key = _load_signing_key(key_path)
    else:
        key = Ed25519PrivateKey.generate()
        _write_private(key_path, private_pem(key))
    kid = key_id_of(key)
    known[kid] = _b64url(_public_raw(key))
    trust = ApprovalTrust(
        issuer=DEV_ISSUER, audience=APPROVAL_AUDIENCE, keys=known, seal_key=seal_public
    )
    trust_path.write_text(trust.model_dump_json(indent=2) + "\n")
    return DevIssuer(directory=directory, trust=trust, key_id=kid)


def _write_private(path: Path, pem: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    tmp.replace(path)


def _seal_key(path: Path) -> X25519PrivateKey:
    """The workers' seal key at ``path``, made when missing."""
    if path.exists():
        return load_seal_key(path)
    key = X25519PrivateKey.generate()
    _write_private(path, private_pem(key))
    return key


def load_seal_key(path: Path) -> X25519PrivateKey:
    """The workers' X25519 seal key (BATON_APPROVAL_SEAL_KEY); a clear error when unusable."""
    return load_x25519_key(
        path,
        "BATON_APPROVAL_SEAL_KEY",
        "`baton token init --seal` makes one for the local stack",
    )


def _load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def issue_token(
    directory: Path,
    *,
    user: str,
    roles: list[str],
    ttl_seconds: int | None = None,
    audience: str = APPROVAL_AUDIENCE,
    now: float | None = None,
    workflow_id: str | None = None,
    request_id: str | None = None,
    action_digest: str | None = None,
) -> str:
    """A JWT for ``user`` with ``roles``, signed by the dev issuer in ``directory``.

    An approval token (audience baton-approvals) is bound to one decision: give the workflow
    id, the approval request id and the action digest (``baton pending`` shows them); it lives
    APPROVAL_TOKEN_TTL seconds unless ``ttl_seconds`` says otherwise."""
    if ttl_seconds is None:
        ttl_seconds = APPROVAL_TOKEN_TTL if audience == APPROVAL_AUDIENCE else 3600
    if not user.strip():
        raise ValueError("--user must name the person the token is for")
    if not roles:
        raise ValueError("give at least one --role (e.g. finance-controller)")
    if not 1 <= ttl_seconds <= 7 * 24 * 3600:
        raise ValueError(f"--ttl must be 1..604800 seconds, got {ttl_seconds}")
    key_path = directory / SIGNING_KEY_FILE
    if not key_path.exists():
        init_dev_issuer(directory)
    key = _load_signing_key(key_path)
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "iss": DEV_ISSUER,
        "aud": audience,
        "sub": user,
        "roles": sorted(set(roles)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    for claim, value in (
        (BINDING_CLAIMS["workflow_id"], workflow_id),
        (BINDING_CLAIMS["request_id"], request_id),
        (BINDING_CLAIMS["action_digest"], action_digest),
    ):
        if value is not None:
            claims[claim] = value
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id_of(key)})


def trust_json(trust: ApprovalTrust) -> str:
    return json.dumps(trust.model_dump(), indent=2)
