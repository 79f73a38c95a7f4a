"""Private keys kept in files (the audit checkpoint key, the workers' approval seal key): their
PEM form, and loading one with an error that names the setting pointing at the file.

Must not: be imported by workflow code (it reads files).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


def private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """``key`` as an unencrypted PKCS#8 PEM file's bytes (the file itself is kept 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_ed25519_key(path: Path, setting: str, make: str) -> Ed25519PrivateKey:
    """The Ed25519 signing key in the PEM file ``path``, which the setting ``setting`` names;
    a ValueError naming the setting when it is missing (``make`` says how to make one), is not
    PEM or holds another kind of key."""
    key = _load_pem(path, setting, make)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{setting} file {path} is not an Ed25519 private key")
    return key


def load_x25519_key(path: Path, setting: str, make: str) -> X25519PrivateKey:
    """The X25519 key in ``path``, like :func:`load_ed25519_key`."""
    key = _load_pem(path, setting, make)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{setting} file {path} is not an X25519 private key")
    return key


def _load_pem(path: Path, setting: str, make: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"{setting} names {path}, which does not exist ({make})") from None
    except ValueError as err:
        raise ValueError(f"{setting} file {path} is not a PEM key: {err}") from None


__all__ = ["load_ed25519_key", "load_x25519_key", "private_pem"]
