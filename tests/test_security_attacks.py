"""Attacks by someone with ordinary access (can start runs and send Updates/Signals through
Temporal, can read run histories, can write to the database), each one that used to work.

Every test here failed on the code before the fix it names (docs/security.md, threat model).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from baton.identity import SEAL_KEY_FILE, init_dev_issuer, issue_token
from tests.conftest import Harness, _harness
from tests.support.approvals import decision
from tests.support.scripted_model import ScriptedModelServer
from workflows.client import ApprovalRefused
from workflows.contracts import APPROVAL_UPDATE, ApprovalDecision
from workflows.contracts.security import MAX_TEXT_CHARS
from workflows.signed_approval import SEALED_PREFIX, TRUST_REFUSED_ERROR

# -- 1. a starter cannot bring its own issuer ---------------------------------------------------


async def test_a_run_naming_its_own_issuer_is_refused_at_start(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    """BATON_APPROVAL_TRUST on the worker; the starter puts its own issuer (whose key it holds)
    into the input and mints a token for an eligible approver. The run must not use it."""
    worker_issuer = init_dev_issuer(tmp_path / "company")
    attacker = init_dev_issuer(tmp_path / "attacker")
    async with _harness(
        temporal_client, model_server, database_url, approval_trust_file=worker_issuer.trust_file
    ) as h:
        h.client.approval_trust = attacker.trust  # goes into the start input
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(handle.result(), timeout=30)
            cause = failed.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == TRUST_REFUSED_ERROR
            assert "input field approval_trust names issuer" in cause.message
            assert "BATON_APPROVAL_TRUST" in cause.message
            # nothing was done for it: no approval asked, nothing posted
            trail = h.runtime.ledger.trail(handle.id)
            assert not [r for r in trail if r.action.startswith(("approval.", "entry.posted"))]

            # the worker's own trust in the input (what `baton` clients send) is fine
            h.client.approval_trust = worker_issuer.trust
            h.period = f"{int(h.period[:4]) + 500:04d}-10"
            from activities.seed import seed_period

            seed_period(h.runtime.db, h.tenant, h.period)
            fine = await h.client.start_finance_close(h.start_input())
            assert (await h.wait_for_pending(fine.id)).pending
            await fine.cancel()


# -- 2. a token approves one decision, once, and never enters history ---------------------------


async def test_approval_tokens_are_bound_single_use_and_kept_out_of_history(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    issuer = init_dev_issuer(tmp_path / "issuer", seal=True)
    assert issuer.trust.seal_key
    async with _harness(
        temporal_client,
        model_server,
        database_url,
        approval_trust_file=issuer.trust_file,
        approval_seal_key_file=issuer.directory / SEAL_KEY_FILE,
    ) as h:
        h.client.approval_trust = issuer.trust  # the client seals tokens to the workers
        async with h.worker():
            handle, request = await h.start_close_awaiting_approval()

            def token(**bound: Any) -> str:
                claims: dict[str, Any] = {
                    "workflow_id": handle.id,
                    "request_id": request.request_id,
                    "action_digest": request.action_digest,
                    **bound,
                }
                return issue_token(
                    issuer.directory, user="carol", roles=request.approver_roles, **claims
                )

            def decision(assertion: str, **changes: Any) -> ApprovalDecision:
                fields: dict[str, Any] = {
                    "request_id": request.request_id,
                    "approver": "carol",
                    "verdict": "approve",
                    "rationale": "reviewed",
                    "action_digest": request.action_digest,
                    "assertion": assertion,
                    **changes,
                }
                return ApprovalDecision(**fields)

            refusals = {
                "bound to workflow_id": decision(token(workflow_id="some-other-run")),
                "bound to request_id": decision(token(request_id="apr-other")),
                "bound to action_digest": decision(token(action_digest="0" * 64)),
                "carries no 'baton_workflow_id' claim": decision(
                    issue_token(issuer.directory, user="carol", roles=request.approver_roles)
                ),
                "may live at most 600 s": decision(token(ttl_seconds=3600)),
            }
            for expected, bad in refusals.items():
                with pytest.raises(ApprovalRefused, match=expected):
                    await h.client.decide(handle.id, bad)
            # a token for this request is no good on another digest either
            good = token()
            with pytest.raises(ApprovalRefused, match="bound to action_digest"):
                await h.client.decide(handle.id, decision(good, action_digest="f" * 64))
            # a plain (unsealed) token is refused before it could enter history
            with pytest.raises(WorkflowUpdateFailedError) as plain:
                await handle.execute_update(APPROVAL_UPDATE, decision(good), result_type=dict)
            assert "sealed to its seal key only" in str(plain.value.cause)

            ack = await h.client.decide(handle.id, decision(good))
            assert ack.accepted and not ack.duplicate
            # the same token on the same request again: refused, not a silent duplicate
            with pytest.raises(ApprovalRefused, match="was already used in this run"):
                await h.client.decide(handle.id, decision(good))
            result = await handle.result()
        assert result.approvals[0].approvers == ["carol"]

    # the token is nowhere in the run's history, nor in the audit ledger
    history = await temporal_client.get_workflow_handle(handle.id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    signature = good.rsplit(".", 1)[1]
    assert good.encode() not in raw and signature.encode() not in raw
    assert SEALED_PREFIX.encode() in raw  # what was sent instead: the sealed token
    trail = h.runtime.ledger.trail(handle.id)
    ledger_text = json.dumps([r.model_dump(mode="json") for r in trail], default=str)
    assert signature not in ledger_text
    [vote] = [json.loads(r.detail_json) for r in trail if r.action == "approval.vote"]
    import hashlib

    assert vote["token_sha256"] == hashlib.sha256(good.encode()).hexdigest()
    assert vote["token_subject"] == "carol"
    assert vote["signed_by"] == f"{issuer.trust.issuer}#{issuer.key_id}"
    assert vote["token_id"]


def test_worker_warns_when_signed_approvals_meet_clear_payloads(tmp_path: Path) -> None:
    from baton.settings import Settings
    from worker import security_warnings

    issuer = init_dev_issuer(tmp_path, seal=True)
    plain = Settings(approval_trust_file=issuer.trust_file)
    warnings = security_warnings(plain)
    assert any("payload encryption is off" in w for w in warnings)
    assert any("approval tokens are not sealed" in w for w in warnings)
    sealed = Settings(
        approval_trust_file=issuer.trust_file, approval_seal_key_file=tmp_path / SEAL_KEY_FILE
    )
    assert len(security_warnings(sealed)) == 1
    assert security_warnings(Settings()) == []
    # a trust file naming a seal key on a worker without the private key: refused at start
    with pytest.raises(ValueError, match="BATON_APPROVAL_SEAL_KEY .* is not set"):
        plain.approval_seal_key()


# -- 3. size limits: a long rationale cannot jam a run ------------------------------------------


async def test_a_huge_rationale_is_refused_and_the_run_still_finishes(harness: Harness) -> None:
    h = harness
    huge = "x" * 1_200_000
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        fields = {
            "request_id": request.request_id,
            "approver": "carol",
            "verdict": "approve",
            "rationale": huge,
            "action_digest": request.action_digest,
        }
        # through the contract (BatonClient, the CLI): refused before anything is sent
        with pytest.raises(ValidationError, match=f"rationale\n.*at most {MAX_TEXT_CHARS}"):
            ApprovalDecision(**fields)
        # a raw Temporal client sends it anyway: the worker refuses the Update, naming the field
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(APPROVAL_UPDATE, fields, result_type=dict)
        message = str(refused.value.cause)
        assert "rationale" in message and f"at most {MAX_TEXT_CHARS} characters" in message
        # ... and as a Signal: dropped (it cannot be decoded), the run is not jammed
        await handle.signal("submit_approval", fields)
        ack = await h.client.approve(handle.id, approver="carol", rationale="ok")
        assert ack.accepted
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.posted
    trail = h.runtime.ledger.trail(handle.id)
    assert all(len(r.rationale or "") <= MAX_TEXT_CHARS for r in trail)
    # the approval's rationale is written once per audit batch (on the vote), not twice
    approved = [r for r in trail if r.action == "approval.approved"]
    assert approved and approved[0].rationale in ("", None)
    assert json.loads(approved[0].detail_json)["rationale_on"] == "approval.vote"


def test_ids_and_names_have_limits_that_name_the_field() -> None:
    base = {
        "request_id": "apr-1",
        "approver": "carol",
        "verdict": "approve",
        "rationale": "ok",
        "action_digest": "d" * 64,
    }
    for field, limit in (("request_id", 200), ("approver", 200), ("action_digest", 200)):
        with pytest.raises(ValidationError, match=f"{field}\n.*at most {limit} characters"):
            ApprovalDecision(**{**base, field: "a" * (limit + 1)})
    with pytest.raises(ValidationError, match="amendments\n.*at most 100 items"):
        ApprovalDecision(
            **{
                **base,
                "verdict": "amend",
                "amendments": [{"entry_id": f"e{i}", "account": "x"} for i in range(101)],
            }
        )
    from workflows.contracts import FinanceCloseInput

    with pytest.raises(ValidationError, match="requested_by\n.*at most 200 characters"):
        FinanceCloseInput(tenant="acme", period="2026-10", requested_by="a" * 201)


async def test_a_flood_of_refused_signals_is_audited_as_claims_and_rate_limited(
    harness: Harness,
) -> None:
    from workflows.approval_gate import REFUSED_SIGNAL_AUDIT_LIMIT

    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        forged = decision(request, "mallory", rationale="let me in")
        for _ in range(REFUSED_SIGNAL_AUDIT_LIMIT + 15):
            await handle.signal("submit_approval", forged)
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        await asyncio.wait_for(handle.result(), timeout=60)
    refused = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "approval.refused"]
    assert len(refused) == REFUSED_SIGNAL_AUDIT_LIMIT
    assert all(r.actor == "baton:workflow" for r in refused)
    assert all((r.rationale or "").startswith("claimed by mallory (unverified):") for r in refused)
    assert "rate limit" in json.loads(refused[-1].detail_json)["further_refusals"]
    # the rest are not dropped silently: summarised, with their count and when they came
    summaries = [
        json.loads(r.detail_json)
        for r in h.runtime.ledger.trail(handle.id)
        if r.action == "approval.refusals_summarised"
    ]
    assert sum(s["count"] for s in summaries) == 15
    assert summaries[-1]["refused_so_far"] == REFUSED_SIGNAL_AUDIT_LIMIT + 15
    assert all(s["first_received_at"] <= s["last_received_at"] for s in summaries)


# -- runs started before these rules still replay -----------------------------------------------


async def test_a_signed_run_from_before_the_rules_replays_with_them() -> None:
    """A close recorded on the code before issue 21, on a worker with BATON_APPROVAL_TRUST: its
    input named the starter's own issuer, 25 forged Signals were refused (all audited), and an
    unbound token of that issuer approved it by Signal. Replayed on today's code with the
    worker's trust interceptor it takes the same steps: the new rules sit behind
    workflow.patched (worker-approval-trust-wins, approval-tokens-bound-and-single-use,
    refused-signals-rate-limited), so runs in flight are not broken by the upgrade."""
    from tests.support import golden
    from workflows.contracts.security import ApprovalTrust
    from workflows.finance_close import FinanceCloseWorkflow
    from workflows.signed_approval import RequireSignedApprovals

    trust = ApprovalTrust.model_validate_json(
        (golden.GOLDEN / "finance_close_signed_unbound.trust.json").read_text()
    )
    history = golden.load(
        golden.GOLDEN / "finance_close_signed_unbound.json", "golden-signed-unbound"
    )
    await golden.assert_replays(
        history, FinanceCloseWorkflow, interceptors=[RequireSignedApprovals(trust)]
    )


# -- 5. the dev stack ---------------------------------------------------------------------------


def test_local_state_is_private_to_its_owner(tmp_path: Path) -> None:
    """.baton/ (histories, databases, keys, tokens) is 0700, its databases 0600, even where it
    existed with looser modes; the dev issuer's directory and keys too."""
    import os
    import stat

    from activities.database import Database
    from baton.devstack.local import private_dir, private_files

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    state = tmp_path / ".baton"
    db = Database(f"sqlite:///{state / 'baton.db'}")
    db.create_tables()
    assert (mode(state), mode(state / "baton.db")) == (0o700, 0o600)
    db.dispose()
    # a checkout from before: 0755 / 0644, tightened when the database is opened again
    os.chmod(state, 0o755)
    os.chmod(state / "baton.db", 0o644)
    Database(f"sqlite:///{state / 'baton.db'}").dispose()
    assert (mode(state), mode(state / "baton.db")) == (0o700, 0o600)
    # the stack's state dir and the files its servers create under the umask
    stack = tmp_path / "stack"
    stack.mkdir(mode=0o755)
    (stack / "temporal.db").write_text("")
    os.chmod(stack / "temporal.db", 0o644)
    private_dir(stack)
    private_files(stack, "*.db*")
    assert (mode(stack), mode(stack / "temporal.db")) == (0o700, 0o600)
    os.chmod(state, 0o755)
    issuer = init_dev_issuer(state / "issuer", seal=True)  # `baton token init`
    assert (mode(state), mode(issuer.directory)) == (0o700, 0o700)
    assert mode(issuer.directory / SEAL_KEY_FILE) == 0o600
    assert mode(issuer.directory / "signing-key.pem") == 0o600


def test_settings_never_print_secrets() -> None:
    from baton.settings import Settings

    settings = Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-live-abcdef123456",
            "DATABASE_URL": "postgresql+psycopg://baton:hunter2-db-pass@db.internal/baton",
            "BATON_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
            "BATON_APPROVAL_TOKEN": "eyJ.secret.token",
            "BATON_NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x",
            "BATON_NOTIFY_WEBHOOK_SECRET": "webhook-secret-xyz",
        }
    )
    shown = repr(settings) + str(settings)
    for secret in ("sk-live-abcdef123456", "hunter2-db-pass", "A" * 43, "eyJ.secret.token"):
        assert secret not in shown
    assert "webhook-secret-xyz" not in shown
    assert "temporal_address=" in shown  # the rest is still there to debug with


async def test_an_unknown_request_id_learns_nothing_before_the_token_is_checked(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    issuer = init_dev_issuer(tmp_path / "issuer")
    async with _harness(
        temporal_client, model_server, database_url, approval_trust_file=issuer.trust_file
    ) as h:
        async with h.worker():
            handle, request = await h.start_close_awaiting_approval()
            probe = ApprovalDecision(
                request_id="apr-guess",
                approver="carol",
                verdict="approve",
                rationale="?",
                action_digest=request.action_digest,
            )
            with pytest.raises(ApprovalRefused) as refused:
                await h.client.decide(handle.id, probe)
            assert "signed identity assertion" in str(refused.value)
            assert request.request_id not in str(refused.value)
            await handle.cancel()


def test_validate_refuses_a_5000_deep_document_with_a_clear_message(tmp_path: Path) -> None:
    """`baton validate` on 5,000 levels of nesting (flow and block style): an answer naming the
    limit, not a RecursionError."""
    import subprocess
    import sys

    from baton.settings import REPO_ROOT

    flow = tmp_path / "flow.yaml"
    flow.write_text("name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    block = tmp_path / "block.yaml"
    block.write_text("name: x\nsteps:\n  " + "- " * 5000 + "x\n")
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\ndescription: " + "y" * 1_100_000 + "\n")
    for path, expected in (
        (flow, "nests deeper than 100 levels"),
        (block, "nests deeper than 100 levels"),
        (huge, "at most 1,000,000 are read"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "baton.cli", "validate", str(path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert expected in run.stdout + run.stderr
        assert "RecursionError" not in run.stdout + run.stderr


def test_compose_publishes_every_port_on_loopback_only() -> None:
    import yaml

    from baton.settings import REPO_ROOT

    compose = yaml.safe_load((REPO_ROOT / "temporal-dev" / "docker-compose.yml").read_text())
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert {name for name, ports in published.items() if ports} >= {"temporal", "opa"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


# -- what already held: kept as regression tests --------------------------------------------------


async def test_visibility_filters_refuse_quotes(temporal_client: Client) -> None:
    from workflows.client import BatonClient

    sneaky = BatonClient(temporal_client, task_queue="x' OR TaskQueue != '")
    with pytest.raises(ValueError, match="may not contain quotes"):
        await sneaky.running_in_scope("global")
    with pytest.raises(ValueError, match="may not contain quotes"):
        await BatonClient(temporal_client).running_in_scope("tenant:acme' OR 'a'='a")


def test_ledger_queries_are_parameterised(database_url: str) -> None:
    from activities.audit import AuditLedger
    from activities.database import Database
    from workflows.contracts import AuditEvent

    db = Database(database_url)
    db.create_tables()
    ledger = AuditLedger(db)
    ledger.append(
        [
            AuditEvent(
                workflow_id="wf-1", run_id="r", seq="wf/1", actor="carol", action="approval.vote"
            )
        ]
    )
    assert ledger.trail("x' OR '1'='1") == []
    assert ledger.trail("wf-1' --") == []
    assert len(ledger.trail("wf-1")) == 1


def test_yaml_alias_bombs_are_refused() -> None:
    from workflows.dsl.validate import validate_text

    laughs = ["name: x", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        refs = ",".join([f"*a{i - 1}"] * 9)
        laughs.append(f"a{i}: &a{i} [{refs}]")
    laughs.append("steps: *a8")
    definition, issues = validate_text("\n".join(laughs), "bomb.yaml")
    assert definition is None
    assert any("too large or deep" in i.message for i in issues)


def test_free_form_event_data_and_process_input_are_bounded() -> None:
    from workflows.dsl.model import ProcessEvent

    with pytest.raises(ValidationError, match="data is 1,200,0.. characters as JSON; at most"):
        ProcessEvent(name="paid", data={"note": "x" * 1_200_000})
    with pytest.raises(ValidationError, match="name\n.*at most 200 characters"):
        ProcessEvent(name="n" * 201)
    assert ProcessEvent(name="paid", data={"amount": 10}).data == {"amount": 10}


def test_sealed_tokens_open_only_with_the_workers_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from baton.identity import load_seal_key
    from workflows.signed_approval import AssertionRefused, seal_assertion, unseal_assertion

    issuer = init_dev_issuer(tmp_path, seal=True)
    assert issuer.trust.seal_key is not None
    key = load_seal_key(tmp_path / SEAL_KEY_FILE)
    token = issue_token(tmp_path, user="carol", roles=["finance-controller"])
    sealed = seal_assertion(token, issuer.trust.seal_key)
    assert sealed.startswith(SEALED_PREFIX) and token not in sealed
    assert seal_assertion(token, issuer.trust.seal_key) != sealed  # fresh ephemeral key each time
    assert unseal_assertion(sealed, key) == token
    assert unseal_assertion(token, key) == token  # a plain token passes through (refused later)
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    cases = {
        "does not open with this worker's seal key": (sealed, X25519PrivateKey.generate()),
        "sealed to another key, or altered": (flipped, key),
        "holds no seal key": (sealed, None),
        "malformed": (SEALED_PREFIX + "abc", key),
    }
    for expected, (text, with_key) in cases.items():
        with pytest.raises(AssertionRefused, match=expected):
            unseal_assertion(text, with_key)
