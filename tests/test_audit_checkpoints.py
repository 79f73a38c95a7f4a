"""Signed audit checkpoints: someone who can write to the database rewrites the chain (edits a
row and recomputes every later hash) or deletes the newest rows. The chain alone still links;
the verifier reports both against the latest signed checkpoint.

Runs on SQLite (the attacks are plain SQL; the checkpoint log is a file outside the database).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import select, text

from activities.audit import GENESIS_HASH, AuditLedger, AuditRecord, hashed_content, row_hash
from activities.audit_checkpoint import (
    CheckpointWriter,
    FileCheckpointLog,
    HttpCheckpointLog,
    load_checkpoint_key,
    new_checkpoint_key,
    public_key_text,
    verify_against,
)
from activities.database import Database
from baton.settings import REPO_ROOT
from workflows.contracts import AuditEvent


@pytest.fixture
def ledger(database_url: str) -> AuditLedger:
    db = Database(database_url)
    db.create_tables()
    return AuditLedger(db)


def event(seq: str, **kw: object) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "workflow_id": "wf-1",
            "run_id": "run-1",
            "seq": seq,
            "actor": "carol",
            "action": "approval.approved",
            "rationale": "fine",
            **kw,
        }
    )


def rewrite_chain_from(ledger: AuditLedger, position: int, rationale: str) -> None:
    """The attacker: edit row ``position``, then recompute that row's and every later hash, so
    each row matches its hash and links to the one before it."""
    with ledger.db.session() as s:
        s.exec(  # type: ignore[call-overload]
            text("UPDATE audit_record SET rationale = :r WHERE position = :p").bindparams(
                r=rationale, p=position
            )
        )
    with ledger.db.session() as s:
        rows = list(s.exec(select(AuditRecord).order_by(AuditRecord.position)))  # type: ignore[arg-type]
        prev = GENESIS_HASH
        for row in rows:
            if row.position >= position:
                row.prev_hash = prev
                row.row_hash = row_hash(prev, hashed_content(row.model_dump()))
                s.add(row)
            prev = row.row_hash


def truncate_after(ledger: AuditLedger, position: int) -> None:
    with ledger.db.session() as s:
        s.exec(  # type: ignore[call-overload]
            text("DELETE FROM audit_record WHERE position > :p").bindparams(p=position)
        )


def test_a_rewritten_chain_and_deleted_newest_rows_are_reported(
    ledger: AuditLedger, tmp_path: Path
) -> None:
    key_path = tmp_path / "keys" / "checkpoint-key.pem"
    public = new_checkpoint_key(key_path)
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    log = FileCheckpointLog(tmp_path / "checkpoints.jsonl")
    writer = CheckpointWriter(ledger, load_checkpoint_key(key_path), log)

    ledger.append([event(f"wf/{i}") for i in range(1, 6)])
    first = writer.write()
    assert first is not None and first.position == 5
    assert writer.write() is None  # the head has not moved: no new checkpoint
    ledger.append([event(f"wf/{i}") for i in range(6, 11)])
    latest = writer.write()
    assert latest is not None and latest.position == 10
    assert verify_against(ledger, log, public)[0] == []

    # attack 1: edit row 3 and recompute every later hash. The chain alone sees nothing...
    rewrite_chain_from(ledger, 3, "nothing to see")
    assert ledger.verify().ok
    # ...the checkpoints do
    problems, report = verify_against(ledger, log, public)
    assert report.checkpoints == 2 and report.latest == latest
    assert any(
        p.startswith("row 10 has hash") and "the chain up to it was rewritten" in p
        for p in problems
    )

    # attack 2 (on an honest chain): delete the newest rows
    rewrite_chain_from(ledger, 3, "fine")  # back to the signed state
    assert verify_against(ledger, log, public)[0] == []
    truncate_after(ledger, 7)
    assert ledger.verify().ok  # the chain alone: still fine
    problems, _ = verify_against(ledger, log, public)
    assert problems == [
        f"the chain ends at row 7, but the checkpoint of {latest.at} covers row 10: "
        "rows 8..10 were deleted"
    ]


def test_forged_or_edited_checkpoints_are_reported(ledger: AuditLedger, tmp_path: Path) -> None:
    key_path = tmp_path / "checkpoint-key.pem"
    public = new_checkpoint_key(key_path)
    log = FileCheckpointLog(tmp_path / "checkpoints.jsonl")
    ledger.append([event("wf/1")])
    CheckpointWriter(ledger, load_checkpoint_key(key_path), log).write()
    # the attacker signs a checkpoint of the rewritten chain with a key of their own
    mallory = tmp_path / "mallory.pem"
    new_checkpoint_key(mallory)
    ledger.append([event("wf/2")])
    CheckpointWriter(ledger, load_checkpoint_key(mallory), log).write()
    problems, report = verify_against(ledger, log, public)
    assert report.checkpoints == 1
    assert any("checkpoint 2 (position 2): signature does not verify" in p for p in problems)
    # editing a signed line breaks its signature too
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[0]) | {"position": 2}
    log.path.write_text(json.dumps(edited) + "\n")
    problems, _ = verify_against(ledger, log, public)
    assert any("checkpoint 1 (position 2): signature does not verify" in p for p in problems)


class _LogServer(http.server.BaseHTTPRequestHandler):
    """A remote checkpoint log for the test: POST appends, GET lists (append-only)."""

    lines: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.lines.append(body)
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        body = "\n".join(self.lines).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def log_server() -> Iterator[str]:
    _LogServer.lines = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LogServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
    server.shutdown()


def test_checkpoints_to_an_http_endpoint(ledger: AuditLedger, log_server: str) -> None:
    key = Ed25519PrivateKey.generate()
    log = HttpCheckpointLog(log_server)
    ledger.append([event(f"wf/{i}") for i in range(1, 4)])
    assert CheckpointWriter(ledger, key, log).write() is not None
    assert verify_against(ledger, log, key.public_key())[0] == []
    truncate_after(ledger, 1)
    assert verify_against(ledger, log, key.public_key())[0] == [
        f"the chain ends at row 1, but the checkpoint of {json.loads(_LogServer.lines[0])['at']} "
        "covers row 3: rows 2..3 were deleted"
    ]


def test_baton_audit_verify_reports_the_attacks(
    ledger: AuditLedger, database_url: str, tmp_path: Path
) -> None:
    """The real CLI: `baton audit checkpoint-key`, `baton audit checkpoint`, `baton audit verify`
    (the auditor's public key only)."""
    key_path = tmp_path / "audit" / "checkpoint-key.pem"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BATON_AUDIT_CHECKPOINT_LOG": str(tmp_path / "checkpoints.jsonl"),
    }

    def baton(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "baton.cli", *args],
            env={**env, **extra},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = baton("audit", "checkpoint-key", "--out", str(key_path))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert public == public_key_text(load_checkpoint_key(key_path).public_key())
    ledger.append([event(f"wf/{i}") for i in range(1, 6)])
    wrote = baton("audit", "checkpoint", BATON_AUDIT_CHECKPOINT_KEY=str(key_path))
    assert wrote.returncode == 0 and "checkpoint: row 5" in wrote.stdout, wrote.stderr

    ok = baton("audit", "verify", "--public-key", public)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain OK: 5 rows verified; 1 signed checkpoint(s)" in ok.stdout
    rewrite_chain_from(ledger, 2, "rewritten")
    truncate_after(ledger, 4)
    broken = baton("audit", "verify", "--public-key", public)
    assert broken.returncode == 1
    assert "audit chain BROKEN" in broken.stdout
    assert "rows 5..5 were deleted" in broken.stdout
    # without a checkpoint key the verifier says what it cannot see
    blind = baton("audit", "verify")
    assert blind.returncode == 0 and "cannot be detected" in blind.stdout


async def test_the_worker_writes_checkpoints_while_the_chain_moves(
    ledger: AuditLedger, tmp_path: Path
) -> None:
    """worker.checkpoint_writer from the settings, and its loop: a checkpoint when the head
    moved, none while it stands still, a last one at stop."""
    import asyncio
    from types import SimpleNamespace

    from baton.settings import Settings
    from worker import checkpoint_writer

    key_path = tmp_path / "checkpoint-key.pem"
    public = new_checkpoint_key(key_path)
    log_path = tmp_path / "checkpoints.jsonl"
    settings = Settings(audit_checkpoint_key_file=key_path, audit_checkpoint_log=str(log_path))
    assert checkpoint_writer(Settings(), SimpleNamespace(ledger=ledger)) is None  # type: ignore[arg-type]
    writer = checkpoint_writer(settings, SimpleNamespace(ledger=ledger))  # type: ignore[arg-type]
    assert writer is not None
    stop = asyncio.Event()
    ledger.append([event("wf/1")])
    loop = asyncio.create_task(writer.run(stop, every_seconds=0.05))
    for _ in range(100):
        if log_path.exists() and len(log_path.read_text().splitlines()) == 1:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the head stands still: no second checkpoint
    assert len(log_path.read_text().splitlines()) == 1
    ledger.append([event("wf/2"), event("wf/3")])
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    problems, report = verify_against(ledger, FileCheckpointLog(log_path), public)
    assert problems == [] and report.latest is not None and report.latest.position == 3


def test_two_writers_on_one_log_keep_it_linked(ledger: AuditLedger, tmp_path: Path) -> None:
    """Two workers with the checkpoint key, one log file: each links to the newest line."""
    key_path = tmp_path / "checkpoint-key.pem"
    public = new_checkpoint_key(key_path)
    log = FileCheckpointLog(tmp_path / "checkpoints.jsonl")
    first, second = (CheckpointWriter(ledger, load_checkpoint_key(key_path), log) for _ in "ab")
    for i in range(1, 7):
        ledger.append([event(f"wf/{i}")])
        assert (first if i % 2 else second).write() is not None
    problems, report = verify_against(ledger, log, public)
    assert problems == [] and report.checkpoints == 6
    # a truncated chain is not signed over: the old checkpoints keep saying what was there
    truncate_after(ledger, 3)
    assert first.write() is None
    assert len(log.lines()) == 6
