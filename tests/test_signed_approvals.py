"""Signed approvals: decisions carry a JWT from the configured issuer, verified in the approval
Update validator and Signal handler (deterministically: keys from the run's input, time from
workflow.now()). Unsigned, forged, expired, misaddressed or under-privileged ones are refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client

from baton.identity import (
    APPROVAL_AUDIENCE,
    DEV_ISSUER,
    DevIssuer,
    init_dev_issuer,
    issue_token,
    key_id_of,
    load_trust,
)
from baton.settings import REPO_ROOT
from tests.conftest import Harness, _harness
from tests.support import approvals
from tests.support.scripted_model import ScriptedModelServer
from workflows.client import ApprovalRefused
from workflows.contracts import ApprovalDecision, ApprovalRequest
from workflows.contracts.security import ApprovalTrust
from workflows.signed_approval import AssertionRefused, approver_refusal, verify_assertion

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def carol_token(directory: Path, workflow_id: str, request: ApprovalRequest, **claims: Any) -> str:
    """A token from the issuer in ``directory`` for carol's decision on ``request`` in
    ``workflow_id``, with the roles the request asks for; ``claims``: any of it changed."""
    return issue_token(
        directory,
        **{
            "user": "carol",
            "roles": request.approver_roles,
            "workflow_id": workflow_id,
            "request_id": request.request_id,
            "action_digest": request.action_digest,
            **claims,
        },
    )


def trusted_and_forger(h: Harness, tmp_path: Path) -> tuple[DevIssuer, DevIssuer]:
    """The dev issuer, which the harness's client now trusts, and a forger's it does not."""
    dev = init_dev_issuer(tmp_path / "issuer")
    h.client.approval_trust = dev.trust
    return dev, init_dev_issuer(tmp_path / "forger")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": DEV_ISSUER,
        "aud": APPROVAL_AUDIENCE,
        "sub": "carol",
        "roles": ["finance-controller"],
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[ApprovalTrust, Ed25519PrivateKey]:
    dev = init_dev_issuer(tmp_path / "issuer")
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        (dev.directory / "signing-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, Ed25519PrivateKey)
    return dev.trust, key


def sign(key: Ed25519PrivateKey, body: dict[str, object], **header: str) -> str:
    return jwt.encode(body, key, algorithm="EdDSA", headers={"kid": key_id_of(key), **header})


# -- the verifier, without Temporal -----------------------------------------------------------


def test_a_pyjwt_token_verifies_and_agrees_with_pyjwt(
    issuer: tuple[ApprovalTrust, Ed25519PrivateKey],
) -> None:
    trust, key = issuer
    token = sign(key, claims(jti="t-1"))
    identity = verify_assertion(token, trust, NOW)
    assert (identity.subject, identity.roles, identity.token_id) == (
        "carol",
        ("finance-controller",),
        "t-1",
    )
    # the independent implementation reads the same claims from it
    decoded = jwt.decode(
        token,
        key.public_key(),
        algorithms=["EdDSA"],
        audience=APPROVAL_AUDIENCE,
        issuer=DEV_ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded["sub"] == identity.subject


def test_forged_and_invalid_assertions_are_refused(
    issuer: tuple[ApprovalTrust, Ed25519PrivateKey],
) -> None:
    trust, key = issuer
    mallory = Ed25519PrivateKey.generate()
    good = sign(key, claims())
    header, payload, signature = good.split(".")
    as_dave = b64url(json.dumps(claims(sub="dave")).encode())
    alg_none = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    cases = {
        "no token": (None, "is required"),
        "not a jwt": ("hello", "compact JWT"),
        "payload swapped": (f"{header}.{as_dave}.{signature}", "does not verify"),
        "signed by another key": (sign(mallory, claims()), "unknown key id"),
        "another key claiming our kid": (
            jwt.encode(claims(), mallory, algorithm="EdDSA", headers={"kid": key_id_of(key)}),
            "does not verify",
        ),
        "alg none": (
            f"{alg_none}.{payload}.",
            "algorithm 'none' refused",
        ),
        "HS256 with the public key as secret": (
            jwt.encode(claims(), trust.keys[key_id_of(key)], algorithm="HS256"),
            "algorithm 'HS256' refused",
        ),
        "other issuer": (sign(key, claims(iss="https://evil.example")), "issuer"),
        "other audience": (sign(key, claims(aud="baton-codec")), "audience"),
        "expired": (sign(key, claims(exp=int(NOW.timestamp()) - 31)), "expired"),
        "no expiry": (sign(key, claims(exp=None)), "no numeric 'exp'"),
        "not yet valid": (sign(key, claims(nbf=int(NOW.timestamp()) + 600)), "not valid yet"),
        "no subject": (sign(key, claims(sub="")), "no subject"),
        "roles not a list": (sign(key, claims(roles="cfo")), "must list strings"),
        "oversized": ("a." * 5000, "compact JWT"),
    }
    for name, (token, expected) in cases.items():
        with pytest.raises(AssertionRefused, match=expected):
            verify_assertion(token, trust, NOW)
        assert name  # (the case's name shows in the assertion rewrite on failure)
    # within the leeway an expiry is tolerated (clock skew between issuer and Temporal)
    verify_assertion(sign(key, claims(exp=int(NOW.timestamp()) - 5)), trust, NOW)


def test_subject_and_role_must_match_the_decision(
    issuer: tuple[ApprovalTrust, Ed25519PrivateKey],
) -> None:
    trust, key = issuer
    token = sign(key, claims())
    ok = approver_refusal(
        token, trust, NOW, approver="carol", acceptable_roles=["cfo", "finance-controller"]
    )
    assert ok[0] is None
    wrong_person = approver_refusal(
        token, trust, NOW, approver="dave", acceptable_roles=["finance-controller"]
    )
    assert "is for 'carol'" in (wrong_person[0] or "")
    wrong_role = approver_refusal(token, trust, NOW, approver="carol", acceptable_roles=["cfo"])
    assert "needs one of ['cfo']" in (wrong_role[0] or "")


def test_key_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    first = init_dev_issuer(tmp_path)
    old = issue_token(tmp_path, user="carol", roles=["finance-controller"])
    rotated = init_dev_issuer(tmp_path, rotate=True)
    assert rotated.key_id != first.key_id and set(rotated.trust.keys) == {
        first.key_id,
        rotated.key_id,
    }
    new = issue_token(tmp_path, user="carol", roles=["finance-controller"])
    trust = load_trust(rotated.trust_file)
    now = datetime.now(UTC)
    assert verify_assertion(old, trust, now).key_id == first.key_id
    assert verify_assertion(new, trust, now).key_id == rotated.key_id
    # init without --rotate keeps the key
    assert init_dev_issuer(tmp_path).key_id == rotated.key_id


def test_bad_trust_files_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BATON_APPROVAL_TRUST names .* does not exist"):
        load_trust(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"issuer": "x", "audience": "y", "keys": {"k": "short"}}))
    with pytest.raises(ValueError, match="raw Ed25519 public key"):
        load_trust(bad)
    with pytest.raises(ValueError, match="--role"):
        issue_token(tmp_path, user="carol", roles=[])


# -- in a real run: the Update validator and the Signal handler -------------------------------


async def test_unsigned_or_forged_approvals_are_refused_in_a_run(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    dev, forger = trusted_and_forger(h, tmp_path)
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()

        def decision(token: str | None, approver: str = "carol") -> ApprovalDecision:
            return approvals.decision(request, approver, rationale="ok", assertion=token)

        def token(directory: Path = dev.directory, **kw: object) -> str:
            return carol_token(directory, handle.id, request, **kw)

        expired = token(now=(datetime.now(UTC) - timedelta(hours=2)).timestamp())
        cases = {
            "is required": decision(None),
            "unknown key id": decision(token(forger.directory)),
            "is for 'dave'": decision(token(user="dave")),
            "this request needs one of": decision(token(roles=["intern"])),
            "expired": decision(expired),
        }
        for expected, bad in cases.items():
            with pytest.raises(ApprovalRefused, match=f"signed approval refused: .*{expected}"):
                await h.client.decide(handle.id, bad)
        # a forged signal is recorded and ignored
        await handle.signal("submit_approval", decision(None))
        assert (await h.client.status(handle.id)).approval_state == "pending"

        good = decision(token())
        ack = await h.client.decide(handle.id, good)
        assert ack.accepted
        result = await handle.result()
    assert result.approvals[0].approvers == ["carol"]
    trail = h.runtime.ledger.trail(handle.id)
    every_refusal = [r for r in trail if r.action == "approval.refused"]
    # the five refused Updates are audited too (by the worker: they never enter history)
    by_update = [r for r in every_refusal if json.loads(r.detail_json)["via"] == "update"]
    assert len(by_update) == len(cases)
    assert all("signed approval refused" in (r.rationale or "") for r in by_update)
    refused = [r for r in every_refusal if json.loads(r.detail_json)["via"] == "signal"]
    assert len(refused) == 1 and "signed identity assertion" in (refused[0].rationale or "")
    # the name in a refused signal is a claim, not an identity
    assert refused[0].actor == "baton:workflow"
    assert (refused[0].rationale or "").startswith("claimed by carol (unverified): ")
    approved = [r for r in trail if r.action == "approval.approved"]
    assert approved and approved[0].actor == "carol"
    votes = [r for r in trail if r.action == "approval.vote"]
    assert json.loads(votes[0].detail_json)["signed_by"] == f"{DEV_ISSUER}#{dev.key_id}"


async def test_cli_approve_attaches_the_token(harness: Harness, tmp_path: Path) -> None:
    """`baton token issue` then `baton approve --token`: the real CLI in a subprocess."""
    h = harness
    dev = init_dev_issuer(tmp_path / "issuer")
    h.client.approval_trust = dev.trust
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": h.temporal.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": h.temporal.namespace,
        "BATON_TASK_QUEUE": h.client.task_queue,
        "BATON_ISSUER_DIR": str(dev.directory),
        "BATON_APPROVAL_TRUST": str(dev.trust_file),
        "DATABASE_URL": h.settings.database_url,
    }
    env.pop("BATON_APPROVAL_TOKEN", None)

    async def baton(*args: str) -> subprocess.CompletedProcess[str]:
        # async: the worker runs on this test's event loop and must keep answering the CLI
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "baton.cli",
            *args,
            env=env,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        unsigned = await baton("approve", handle.id, "--approver", "carol", "--rationale", "ok")
        assert unsigned.returncode == 1, unsigned.stderr
        assert "signed identity assertion" in unsigned.stderr
        roles = [arg for role in request.approver_roles for arg in ("--role", role)]
        unbound = await baton("token", "issue", "--user", "carol", *roles)
        assert unbound.returncode == 2 and "bound to one decision" in unbound.stderr
        bound = ["--workflow-id", handle.id, "--request-id", request.request_id]
        bound += ["--action-digest", request.action_digest]
        issued = await baton("token", "issue", "--user", "carol", *roles, *bound)
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()
        assert verify_assertion(token, dev.trust, datetime.now(UTC)).subject == "carol"
        signed = await baton(
            "approve", handle.id, "--approver", "carol", "--rationale", "ok", "--token", token
        )
        assert signed.returncode == 0, signed.stderr
        assert "approved" in signed.stdout
        await handle.result()


async def test_the_worker_configuration_enforces_signatures_whatever_the_starter_sends(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    """BATON_APPROVAL_TRUST on the worker: a run started WITHOUT an issuer in its input (a
    starter that bypasses BatonClient) still refuses unsigned approvals."""
    dev = init_dev_issuer(tmp_path / "issuer")
    async with _harness(
        temporal_client, model_server, database_url, approval_trust_file=dev.trust_file
    ) as h:
        assert h.client.approval_trust is None  # the starter sends no trust anchor
        async with h.worker():
            handle, request = await h.start_close_awaiting_approval()
            with pytest.raises(ApprovalRefused, match="signed identity assertion .* is required"):
                await h.client.approve(handle.id, approver="carol", rationale="ok")
            h.client.approval_token = carol_token(dev.directory, handle.id, request)
            await h.client.approve(handle.id, approver="carol", rationale="ok")
            result = await handle.result()
        assert result.approvals[0].approvers == ["carol"]
