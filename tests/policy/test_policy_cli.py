"""`baton policy eval` through the real CLI process (the console script, as a policy author runs
it): exit 0 allow, 1 deny (or anything else that is not an allow), 2 bad input with a message
naming the problem; the decision document and the revision on stdout, on both engines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from activities.policy import PolicyBundle
from tests.policy.test_rego import AGENT_CALL, POSTING_CASES
from tests.support.paths import BATON, POLICY_DIR


def baton(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATON_POLICY_DIR": str(POLICY_DIR)}
    return subprocess.run(
        [BATON, "policy", "eval", *args], env=env, capture_output=True, text=True, timeout=60
    )


def write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


@pytest.mark.parametrize("engine", ["opa", "regorus"])
def test_allow_prints_the_document_and_the_revision(tmp_path: Path, engine: str) -> None:
    done = baton("--input", write(tmp_path, "call.json", AGENT_CALL), "--engine", engine)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    revision = PolicyBundle(POLICY_DIR).revision
    assert (out["policy"], out["verdict"], out["revision"]) == (
        "baton/base/agent_call",
        "allow",
        revision,
    )
    assert out["engine"] == ("opa-embedded" if engine == "opa" else "regorus")
    assert out["decision"] == {
        "allow": True,
        "deny": [],
        "redact": ["card", "email", "iban", "national_id", "phone"],
        "reroute_regions": [],
    }
    assert out["obligations"]["redact"] == out["decision"]["redact"]
    assert done.stderr.strip() == f"allow (policy revision {revision})"


def test_deny_exits_1_with_the_reasons_and_reroute_regions(tmp_path: Path) -> None:
    elsewhere = {**AGENT_CALL, "model": {**AGENT_CALL["model"], "region": "us"}}
    done = baton("--input", write(tmp_path, "us.json", elsewhere))
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["verdict"] == "deny" and out["reasons"][0].startswith("data residency")
    assert out["decision"]["reroute_regions"] == ["eu"]
    assert out["obligations"]["reroute_regions"] == ["eu"]


def test_any_policy_by_name_and_require_approval_is_not_an_allow(tmp_path: Path) -> None:
    posting = write(tmp_path, "posting.json", POSTING_CASES["approval-1000"])
    for name in ("baton/finance/posting", "baton.finance.posting", "data.baton.finance.posting"):
        done = baton("--input", posting, "--policy", name)
        assert done.returncode == 1, done.stderr
        out = json.loads(done.stdout)
        assert (out["policy"], out["verdict"]) == ("baton/finance/posting", "require_approval")
        assert out["obligations"]["approver_roles"] == ["finance-controller"]
    small = write(tmp_path, "small.json", POSTING_CASES["small-debit"])
    assert baton("--input", small, "--policy", "baton/finance/posting/decision").returncode == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read --input"),
        ('{"action": "llm_call",\n "role": }', "is not valid JSON: Expecting value (line 2"),
        ('{"spent_today_usd": NaN}', "is not valid JSON: NaN is not a JSON number"),
        ("[1, 2]", "must hold a JSON object (the policy's input), not a list"),
        ('"llm_call"', "must hold a JSON object (the policy's input), not str"),
    ],
    ids=["missing-file", "invalid-json", "nan", "a-list", "a-string"],
)
def test_bad_input_exits_2_naming_the_problem(
    tmp_path: Path, content: str | None, message: str
) -> None:
    missing = str(tmp_path / "missing.json")
    name = missing if content is None else write(tmp_path, "in.json", content)
    done = baton("--input", name)
    assert done.returncode == 2
    assert message in done.stderr and name in done.stderr
    assert done.stdout == ""


def test_unknown_or_malformed_policy_exits_2(tmp_path: Path) -> None:
    call = write(tmp_path, "call.json", AGENT_CALL)
    unknown = baton("--input", call, "--policy", "baton/base/agent_cal")
    assert unknown.returncode == 2
    assert "unknown policy 'baton/base/agent_cal'" in unknown.stderr
    assert "baton/base/agent_call" in unknown.stderr  # the known ones are listed
    malformed = baton("--input", call, "--policy", "baton/base/agent-call")
    assert malformed.returncode == 2 and "--policy: not a policy document path" in malformed.stderr
