"""Contracts of Baton's security features: the approval issuer's trust anchor.

Imports only pydantic and the standard library (like the rest of workflows/contracts/),
so it passes through the workflow sandbox.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Size limits of the text that people (and attackers) put into runs: start inputs, Updates and
# Signals. A value over its limit is refused by the contract with an error naming the field and
# the limit, before anything is recorded: a 1.2 MB rationale must not reach the workflow, whose
# audit batch would then pass Temporal's 2 MB payload limit and jam the run.
MAX_ID_CHARS = 200  # ids: request, entry, case, event, batch, employee ids; digests
MAX_NAME_CHARS = 200  # names: people, tenants, roles, accounts, versions, regions
MAX_TEXT_CHARS = 8_000  # what a person writes: rationales, comments, reasons, subjects
MAX_DOCUMENT_CHARS = 64_000  # a document a run works on (a support case's body)
MAX_TOKEN_FIELD_CHARS = 16_384  # a (sealed) approval token
MAX_LIST_ITEMS = 100  # amendments, roles and the like in one decision or input


def bounded_json(value: object, field: str, limit: int = MAX_DOCUMENT_CHARS) -> object:
    """Refuse a free-form JSON value (an event's data, a process's input) larger than ``limit``
    characters as JSON, naming the field: the same rule as the string limits, for ``Any``."""
    size = len(json.dumps(value, default=str))
    if size > limit:
        raise ValueError(f"{field} is {size:,} characters as JSON; at most {limit:,} are accepted")
    return value


Id = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Document = Annotated[str, Field(max_length=MAX_DOCUMENT_CHARS)]

_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]{43}=?$")  # 32 raw bytes, base64url


class ApprovalTrust(BaseModel):
    """Who may vouch for an approver: the issuer of signed identity assertions (JWTs), the
    audience they must name, and the issuer's public Ed25519 keys by key id (``kid``; several
    during a key rotation). Travels in the workflow input, so the approval Update validator can
    verify signatures without I/O; public keys only, never a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Name = Field(min_length=1, description="The JWT 'iss' approvals must carry.")
    audience: Name = Field(min_length=1, description="The JWT 'aud' approvals must name.")
    keys: dict[str, str] = Field(
        min_length=1,
        max_length=32,
        description="Ed25519 public keys (32 bytes, base64url) by key id (the JWT header 'kid').",
    )
    roles_claim: Name = Field(default="roles", description="The claim listing the user's roles.")
    leeway_seconds: int = Field(
        default=30, ge=0, le=600, description="Clock skew tolerated on 'exp' and 'nbf'."
    )
    max_token_seconds: int = Field(
        default=600,
        ge=30,
        le=3600,
        description="Longest lifetime ('exp' - 'iat') an approval token may have: minutes, so a "
        "token that leaks is useless soon.",
    )
    seal_key: str | None = Field(
        default=None,
        description="The workers' X25519 public key (32 bytes, base64url). When set, clients "
        "seal approval tokens to it before sending, so the token never enters workflow history "
        "in clear; workers hold the private key (BATON_APPROVAL_SEAL_KEY).",
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

    @field_validator("seal_key")
    @classmethod
    def _seal_key_is_x25519(cls, v: str | None) -> str | None:
        if v is not None and not _B64URL.match(v):
            raise ValueError("seal_key must be a raw X25519 public key (32 bytes) in base64url")
        return v

    def admits(self, other: ApprovalTrust) -> bool:
        """Whether ``other`` (a run's input) asks for nothing this trust does not grant: the
        same issuer and audience, and only keys this trust holds too (an older trust file
        from before a key rotation is fine; a key of the starter's own is not)."""
        return (
            other.issuer == self.issuer
            and other.audience == self.audience
            and all(self.keys.get(kid) == key for kid, key in other.keys.items())
        )


__all__ = [
    "ApprovalTrust",
    "Document",
    "Id",
    "MAX_DOCUMENT_CHARS",
    "MAX_ID_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_FIELD_CHARS",
    "Name",
    "Text",
    "bounded_json",
]
