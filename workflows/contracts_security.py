"""Contracts of Baton's security features: the approval issuer's trust anchor.

Imports only pydantic and the standard library (like workflows/contracts.py, which uses these),
so it passes through the workflow sandbox.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]{43}=?$")  # 32 raw bytes, base64url


class ApprovalTrust(BaseModel):
    """Who may vouch for an approver: the issuer of signed identity assertions (JWTs), the
    audience they must name, and the issuer's public Ed25519 keys by key id (``kid``; several
    during a key rotation). Travels in the workflow input, so the approval Update validator can
    verify signatures without I/O; public keys only, never a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="The JWT 'iss' approvals must carry.")
    audience: str = Field(min_length=1, description="The JWT 'aud' approvals must name.")
    keys: dict[str, str] = Field(
        min_length=1,
        description="Ed25519 public keys (32 bytes, base64url) by key id (the JWT header 'kid').",
    )
    roles_claim: str = Field(default="roles", description="The claim listing the user's roles.")
    leeway_seconds: int = Field(
        default=30, ge=0, le=600, description="Clock skew tolerated on 'exp' and 'nbf'."
    )

    @field_validator("keys")
    @classmethod
    def _keys_are_ed25519(cls, v: dict[str, str]) -> dict[str, str]:
        for kid, key in v.items():
            if not _KEY_ID.match(kid):
                raise ValueError(f"key id {kid!r} must be 1-64 letters, digits, '.', '_' or '-'")
            if not _B64URL.match(key):
                raise ValueError(
                    f"key {kid!r} must be a raw Ed25519 public key (32 bytes) in base64url"
                )
        return v


__all__ = [
    "ApprovalTrust",
]
