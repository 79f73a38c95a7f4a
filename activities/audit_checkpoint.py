"""Signed checkpoints of the audit chain, kept where the database writer cannot rewrite them.

The hash chain (activities/audit.py) is unkeyed: someone who can write to the database can
edit a row, recompute every later hash and delete the newest rows, and the chain still links.
A checkpoint pins the chain: ``{position, head_hash, at}`` of the committed head, signed with an
Ed25519 key that lives outside the database (BATON_AUDIT_CHECKPOINT_KEY), appended to a log the
database writer cannot rewrite: an append-only JSON-lines file (transparency-log style: each
entry carries the sha256 of the entry before it) or an HTTP endpoint (POST one checkpoint; GET
answers the latest). The verifier (:func:`verify_against`) then reports a rewritten chain (the
row at a checkpoint's position no longer has its hash) and deleted newest rows (the chain ends
before a checkpoint's position).

What stays open: rows written after the newest checkpoint can still be rewritten or dropped
until the next one (``BATON_AUDIT_CHECKPOINT_SECONDS``), and a checkpoint log the attacker can
also write must be copied elsewhere (an auditor keeps copies; see docs/security.md).

Must not: be imported by workflow code (it does I/O); hold the signing key in the database.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import select

from activities.audit import AuditLedger, AuditRecord
from activities.keys import load_ed25519_key, private_pem

log = logging.getLogger(__name__)

#: The checkpoint format; part of what is signed.
CHECKPOINT_FORMAT = "baton-audit-checkpoint/v1"
GENESIS = "0" * 64


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw public key, base64url: what an auditor keeps (BATON_AUDIT_CHECKPOINT_PUBLIC_KEY)."""
    return _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def key_id(key: Ed25519PublicKey) -> str:
    return "ckpt-" + hashlib.sha256(_unb64url(public_key_text(key))).hexdigest()[:12]


def new_checkpoint_key(path: Path) -> Ed25519PublicKey:
    """Write a fresh Ed25519 signing key to ``path`` (mode 0600, refused if it exists); a new
    directory for it is 0700."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    return key.public_key()


def load_checkpoint_key(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path`` (BATON_AUDIT_CHECKPOINT_KEY); a clear error when unusable."""
    return load_ed25519_key(
        path,
        "BATON_AUDIT_CHECKPOINT_KEY",
        "`baton audit checkpoint-key --out PATH` makes one",
    )


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64url(text.strip()))
    except ValueError:
        raise ValueError(
            "BATON_AUDIT_CHECKPOINT_PUBLIC_KEY must be a raw Ed25519 public key (32 bytes, "
            "base64url), as `baton audit checkpoint-key` prints it"
        ) from None


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement: "the audit chain had ``head_hash`` at ``position`` at ``at``"."""

    position: int
    head_hash: str
    at: str
    key_id: str
    prev: str  # sha256 of the previous checkpoint's line (GENESIS for the first)
    signature: str = ""

    def signed_body(self) -> bytes:
        body = {
            "format": CHECKPOINT_FORMAT,
            "position": self.position,
            "head_hash": self.head_hash,
            "at": self.at,
            "key_id": self.key_id,
            "prev": self.prev,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def line(self) -> str:
        return json.dumps(
            {**json.loads(self.signed_body()), "signature": self.signature},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, line: str) -> Checkpoint:
        data = json.loads(line)
        if data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} line")
        return cls(
            position=int(data["position"]),
            head_hash=str(data["head_hash"]),
            at=str(data["at"]),
            key_id=str(data["key_id"]),
            prev=str(data["prev"]),
            signature=str(data["signature"]),
        )

    def verifies(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(_unb64url(self.signature), self.signed_body())
        except (InvalidSignature, ValueError):
            return False
        return True


class CheckpointLog(Protocol):
    def append(self, checkpoint: Checkpoint) -> None: ...
    def lines(self) -> list[str]: ...
    def last_line(self) -> str | None: ...
    def exclusive(self) -> AbstractContextManager[object]:
        """Held from reading the newest line to appending the next: two writers on one log
        must not both link to the same predecessor."""
        ...


class FileCheckpointLog:
    """An append-only JSON-lines file. Opened with O_APPEND only: this code never rewrites it.
    Put it where the database's writers have no write access (another volume or host, a
    `chattr +a` file, a WORM bucket synced from it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(checkpoint.line() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text().splitlines() if line.strip()]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def last_line(self) -> str | None:
        """The newest line, read from the end (the log grows by a line a minute for years)."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            chunk = 4096
            while True:
                start = max(0, size - chunk)
                f.seek(start)
                tail = f.read(size - start).decode()
                lines = [line for line in tail.splitlines() if line.strip()]
                if start == 0 or len(lines) > 1:
                    return lines[-1] if lines else None
                chunk *= 2


class HttpCheckpointLog:
    """A remote log: POST ``url`` with one checkpoint (JSON); GET ``url`` answers the log as
    JSON lines (or a JSON list of checkpoints). The service keeps it append-only."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    def append(self, checkpoint: Checkpoint) -> None:
        answer = httpx.post(
            self.url, content=checkpoint.line(), timeout=self.timeout, headers=_JSON_HEADERS
        )
        answer.raise_for_status()

    def lines(self) -> list[str]:
        answer = httpx.get(self.url, timeout=self.timeout)
        answer.raise_for_status()
        text = answer.text.strip()
        if text.startswith("["):
            return [json.dumps(item) for item in json.loads(text)]
        return [line for line in text.splitlines() if line.strip()]

    def last_line(self) -> str | None:
        lines = self.lines()
        return lines[-1] if lines else None

    def exclusive(self) -> AbstractContextManager[object]:
        """The service orders appends; run one checkpoint writer per HTTP log (docs)."""
        return nullcontext()


_JSON_HEADERS = {"Content-Type": "application/json"}


def open_log(where: str) -> CheckpointLog:
    """BATON_AUDIT_CHECKPOINT_LOG: an http(s) URL, else a file path."""
    if where.startswith(("http://", "https://")):
        return HttpCheckpointLog(where)
    return FileCheckpointLog(Path(where))


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


class CheckpointWriter:
    """Signs the committed head of the chain and appends it to the log, when it moved."""

    def __init__(
        self,
        ledger: AuditLedger,
        key: Ed25519PrivateKey,
        log: CheckpointLog,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.key = key
        self.log = log
        self.clock = clock
        self.key_id = key_id(key.public_key())

    def head(self) -> tuple[int, str]:
        with self.ledger.db.read_session() as session:
            row = session.exec(
                select(AuditRecord.position, AuditRecord.row_hash)
                .order_by(AuditRecord.position.desc())  # type: ignore[attr-defined]
                .limit(1)
            ).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def write(self) -> Checkpoint | None:
        """Append a checkpoint of the current head; None when the head has not moved since
        the last one (or the chain is empty)."""
        with self.log.exclusive():
            position, head_hash = self.head()
            previous = self.log.last_line()
            last = Checkpoint.parse(previous) if previous else None
            if last is not None and last.position > position:
                log.warning(
                    "audit chain ends at row %s, behind the checkpoint of %s at row %s: rows "
                    "were deleted; not signing it (run `baton audit verify`)",
                    position,
                    last.at,
                    last.position,
                )
                return None
            if position == 0 or (last is not None and last.position == position):
                return None
            unsigned = Checkpoint(
                position=position,
                head_hash=head_hash,
                at=self.clock().isoformat(timespec="seconds"),
                key_id=self.key_id,
                prev=_line_hash(previous) if previous else GENESIS,
            )
            signature = _b64url(self.key.sign(unsigned.signed_body()))
            checkpoint = Checkpoint(**{**unsigned.__dict__, "signature": signature})
            self.log.append(checkpoint)
            return checkpoint

    async def run(self, stop: asyncio.Event, every_seconds: float) -> None:
        """The worker's loop: a checkpoint every ``every_seconds`` while the head moves, and a
        last one at stop. A failed write is logged and tried again next time."""
        while True:
            stopping = stop.is_set()  # read before writing: rows committed until now are in it
            try:
                await asyncio.to_thread(self.write)
            except Exception as err:  # the log is down: the ledger goes on, and we say so
                log.warning("audit checkpoint not written: %s", err)
            if stopping:
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_seconds)
            except TimeoutError:
                pass


@dataclass
class CheckpointReport:
    checkpoints: int = 0
    latest: Checkpoint | None = None
    problems: list[str] | None = None


def read_checkpoints(log: CheckpointLog, key: Ed25519PublicKey) -> CheckpointReport:
    """The log's checkpoints, each signature and link checked; problems named."""
    report = CheckpointReport(problems=[])
    assert report.problems is not None
    prev = GENESIS
    expected_kid = key_id(key)
    for n, line in enumerate(log.lines(), start=1):
        try:
            checkpoint = Checkpoint.parse(line)
        except (ValueError, KeyError, TypeError) as err:
            report.problems.append(f"checkpoint {n}: unreadable ({err})")
            continue
        if checkpoint.key_id != expected_kid or not checkpoint.verifies(key):
            report.problems.append(
                f"checkpoint {n} (position {checkpoint.position}): signature does not verify "
                f"with the auditor's key {expected_kid} (forged or altered)"
            )
            continue
        if checkpoint.prev != prev:
            report.problems.append(
                f"checkpoint {n}: does not link to the checkpoint before it (the log was edited)"
            )
        prev = _line_hash(line)
        report.checkpoints += 1
        report.latest = checkpoint
    return report


def verify_against(
    ledger: AuditLedger, log: CheckpointLog, key: Ed25519PublicKey
) -> tuple[list[str], CheckpointReport]:
    """Check the database's chain against every signed checkpoint: a checkpointed position
    must still exist with the hash it had. (The chain's own links are AuditLedger.verify.)"""
    report = read_checkpoints(log, key)
    problems = list(report.problems or [])
    checkpoints: list[Checkpoint] = []
    for line in log.lines():
        try:
            c = Checkpoint.parse(line)
        except (ValueError, KeyError, TypeError):
            continue
        if c.verifies(key):
            checkpoints.append(c)
    if not checkpoints:
        return problems, report
    wanted = {c.position for c in checkpoints}
    found: dict[int, str] = {}
    last_position = 0
    with ledger.db.read_session() as session:
        rows = session.exec(select(AuditRecord.position, AuditRecord.row_hash))
        for position, row_hash in rows:
            last_position = max(last_position, position)
            if position in wanted:
                found[position] = row_hash
    for c in checkpoints:
        if c.position > last_position:
            problems.append(
                f"the chain ends at row {last_position}, but the checkpoint of {c.at} covers "
                f"row {c.position}: rows {last_position + 1}..{c.position} were deleted"
            )
        elif c.position not in found:
            problems.append(f"row {c.position} of the checkpoint of {c.at} is missing (deleted)")
        elif found[c.position] != c.head_hash:
            problems.append(
                f"row {c.position} has hash {found[c.position][:12]}..., but the checkpoint of "
                f"{c.at} signed {c.head_hash[:12]}...: the chain up to it was rewritten"
            )
    return problems, report


def describe(checkpoint: Checkpoint | None) -> dict[str, Any]:
    if checkpoint is None:
        return {}
    return {"position": checkpoint.position, "at": checkpoint.at, "key_id": checkpoint.key_id}


__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointLog",
    "CheckpointReport",
    "CheckpointWriter",
    "FileCheckpointLog",
    "GENESIS",
    "HttpCheckpointLog",
    "describe",
    "key_id",
    "load_checkpoint_key",
    "load_public_key",
    "log",
    "new_checkpoint_key",
    "open_log",
    "public_key_text",
    "read_checkpoints",
    "verify_against",
]
