"""Payload encryption: AES-256-GCM for every Temporal payload that carries business data.

Temporal stores workflow inputs, results, activity arguments, signals, updates, memos and
(with :func:`encrypted_converter`) failure messages as *payloads*. :class:`EncryptionCodec` is a
Temporal ``PayloadCodec``: the client and the worker encrypt each payload before it leaves the
process and decrypt it when it comes back, so the Temporal server (and its database, and anyone
exporting a history) only ever holds ciphertext.

Key rotation by key id: a :class:`KeyRing` holds every key still needed to read old histories
and names the *current* one. New payloads are encrypted with the current key and carry its id
in their metadata (``encryption-key-id``); a payload is decrypted with whichever known key its id
names. Rotating = add the new key, make it current, keep the old ones until no open or retained
history refers to them.

Keys come from configuration (``BATON_ENCRYPTION_KEYS`` / ``BATON_ENCRYPTION_KEY_ID``, read by
:mod:`baton.settings`), never from code: ``baton encryption new-key`` prints a fresh one.

What is NOT encrypted (Temporal needs it in clear to route and index): workflow ids and types,
task queue names, activity names, search attributes, timestamps. Baton's workflow ids and search
attributes hold tenant, period, process and approval state, never amounts, accounts, memo lines,
prompts or rationales.

Must not: be imported by workflow code (the codec runs outside the workflow sandbox).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NONCE_BYTES = 12


class EncryptionConfigError(ValueError):
    """The encryption configuration is unusable; the message names the variable and the fix."""


class UnknownKeyError(ValueError):
    """A payload was encrypted with a key id this key ring does not hold."""


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """Every known AES-256 key by id, and the id new payloads are encrypted with."""

    keys: Mapping[str, bytes] = dataclasses.field(repr=False)
    current: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise EncryptionConfigError("BATON_ENCRYPTION_KEYS holds no key")
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise EncryptionConfigError(
                    f"BATON_ENCRYPTION_KEYS: key id {key_id!r} must be 1-64 letters, digits, "
                    "'.', '_' or '-'"
                )
            if len(key) != 32:
                raise EncryptionConfigError(
                    f"BATON_ENCRYPTION_KEYS: key {key_id!r} must be 32 bytes (AES-256), "
                    f"got {len(key)}; make one with `baton encryption new-key`"
                )
        if self.current not in self.keys:
            raise EncryptionConfigError(
                f"BATON_ENCRYPTION_KEY_ID {self.current!r} is not one of the configured key ids "
                f"({', '.join(sorted(self.keys))})"
            )

    @classmethod
    def parse(cls, spec: str, current: str | None = None) -> KeyRing:
        """``"k2:BASE64,k1:BASE64"`` (current = ``current``, else the first listed)."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep or not encoded.strip():
                raise EncryptionConfigError(
                    "BATON_ENCRYPTION_KEYS must be a comma-separated list of KEY_ID:BASE64_KEY, "
                    f"got an item starting {item[:8]!r}..."
                )
            if key_id in keys:
                raise EncryptionConfigError(f"BATON_ENCRYPTION_KEYS names {key_id!r} twice")
            try:
                keys[key_id] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise EncryptionConfigError(
                    f"BATON_ENCRYPTION_KEYS: key {key_id!r} is not valid base64"
                ) from None
            order.append(key_id)
        if not keys:
            raise EncryptionConfigError("BATON_ENCRYPTION_KEYS holds no key")
        return cls(keys=keys, current=current or order[0])


def new_key_line(key_id: str) -> str:
    """A fresh ``KEY_ID:BASE64`` item for BATON_ENCRYPTION_KEYS (32 random bytes)."""
    if not _KEY_ID.match(key_id):
        raise EncryptionConfigError(f"key id {key_id!r} must be 1-64 letters, digits, . _ -")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the whole serialized payload (metadata included); the key id is both in
    the clear metadata (to pick the key) and bound into the ciphertext as associated data (so it
    cannot be swapped)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._aead = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.ring.current
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead[key_id].encrypt(nonce, payload.SerializeToString(), _aad(key_id))
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on: pass through as is
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
        aead = self._aead.get(key_id)
        if aead is None:
            raise UnknownKeyError(
                f"payload encrypted with key id {key_id!r}, which BATON_ENCRYPTION_KEYS does not "
                f"hold (known: {', '.join(sorted(self._aead))}); add the old key back to read it"
            )
        nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        try:
            plain = aead.decrypt(nonce, sealed, _aad(key_id))
        except InvalidTag:
            raise ValueError(
                f"payload encrypted with key id {key_id!r} failed authentication: it was "
                "altered, or the key under that id is not the one it was encrypted with"
            ) from None
        return Payload.FromString(plain)


def _aad(key_id: str) -> bytes:
    return b"baton-payload:" + key_id.encode()
