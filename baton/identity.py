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
from pydantic import ValidationError

from workflows.contracts_security import ApprovalTrust

DEV_ISSUER = "baton-dev-issuer"
APPROVAL_AUDIENCE = "baton-approvals"
CODEC_AUDIENCE = "baton-codec"
SIGNING_KEY_FILE = "signing-key.pem"
TRUST_FILE = "trust.json"


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


def init_dev_issuer(directory: Path, *, rotate: bool = False) -> DevIssuer:
    """Create (or, with ``rotate``, replace) the dev signing key and write the trust file.

    Idempotent without ``rotate``: an existing key is kept."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / SIGNING_KEY_FILE
    trust_path = directory / TRUST_FILE
    known: dict[str, str] = {}
    if trust_path.exists():
        known = dict(load_trust(trust_path).keys)
    if key_path.exists() and not rotate:
        key = _load_signing_key(key_path)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = key_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        tmp.replace(key_path)
    kid = key_id_of(key)
    known[kid] = _b64url(_public_raw(key))
    trust = ApprovalTrust(issuer=DEV_ISSUER, audience=APPROVAL_AUDIENCE, keys=known)
    trust_path.write_text(trust.model_dump_json(indent=2) + "\n")
    return DevIssuer(directory=directory, trust=trust, key_id=kid)


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
    ttl_seconds: int = 3600,
    audience: str = APPROVAL_AUDIENCE,
    now: float | None = None,
) -> str:
    """A JWT for ``user`` with ``roles``, signed by the dev issuer in ``directory``."""
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
    claims = {
        "iss": DEV_ISSUER,
        "aud": audience,
        "sub": user,
        "roles": sorted(set(roles)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id_of(key)})


def trust_json(trust: ApprovalTrust) -> str:
    return json.dumps(trust.model_dump(), indent=2)
