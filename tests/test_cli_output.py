"""What the `baton` process prints, as a script and as a person at a terminal see it: tables
with one row per line and no terminal codes when piped, the same rows as JSON with `--json`,
colour only on a terminal, and Click's usage errors with exit 2 (nothing here needs Temporal)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from baton.settings import REPO_ROOT

BATON = [sys.executable, "-m", "baton.cli"]


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'baton.db'}",
    }


def baton(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BATON, *args], env=env(tmp_path), capture_output=True, text=True, timeout=120
    )


def test_piped_tables_are_plain_one_row_per_line_and_match_the_json(tmp_path: Path) -> None:
    table = baton(tmp_path, "processes")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PROCESS", "WORKFLOW", "TYPE", "INPUT", "START"]
    rows = json.loads(baton(tmp_path, "processes", "--json").stdout)
    assert {r["process"] for r in rows} >= {"finance_close", "hr_onboarding"}
    for r in rows:  # every process on one line of its own, all its cells on it
        line = next(x for x in lines if x.startswith(r["process"] + " "))
        assert line.split() == [r["process"], r["workflow_type"], r["input"], r["start"]]
        assert line == line.rstrip()


def test_catalog_table_lists_every_entry_of_the_json(tmp_path: Path) -> None:
    table = baton(tmp_path, "catalog")
    listed = json.loads(baton(tmp_path, "catalog", "--json").stdout)
    assert table.returncode == 0 and "\x1b" not in table.stdout
    rows = [line.split()[:2] for line in table.stdout.splitlines()[2:]]
    assert rows == [[e["kind"], e["name"]] for e in listed]


def test_a_table_on_a_terminal_has_colour(tmp_path: Path) -> None:
    """At a terminal rich styles the header (bold); the same command piped has none (above)."""
    leader, follower = pty.openpty()
    terminal = {k: v for k, v in env(tmp_path).items() if k not in ("NO_COLOR", "TERM")}
    done = subprocess.run(
        [*BATON, "processes"],
        env={**terminal, "TERM": "xterm-256color", "COLUMNS": "120"},
        stdout=follower,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: everything read
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert done.returncode == 0, done.stderr
    assert b"\x1b[1m" in out and b"finance_close" in out


def test_audit_verify_json_says_ok_and_what_it_checked(tmp_path: Path) -> None:
    done = baton(tmp_path, "audit", "verify", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ok": True,
        "rows_checked": 0,
        "problems": [],
        "checkpoints": "no checkpoint key",
    }


def test_usage_errors_exit_2_naming_the_option_or_command(tmp_path: Path) -> None:
    missing = baton(tmp_path, "close", "start", "--tenant", "acme", "--requested-by", "x")
    assert missing.returncode == 2 and "Missing option '--period'" in missing.stderr
    unknown = baton(tmp_path, "kill", "lst")
    assert unknown.returncode == 2 and "No such command 'lst'" in unknown.stderr
    bad = baton(tmp_path, "support", "enqueue", "--tenant", "a", "--customer", "c",
                "--subject", "s", "--body", "b", "--priority", "P9")  # fmt: skip
    assert bad.returncode == 2 and "--priority" in bad.stderr and "P9" in bad.stderr
