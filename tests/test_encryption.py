"""Payload encryption (AES-GCM codec, key rotation) and the codec server.

The end-to-end test runs a real finance close through the real dev server with encryption on,
then reads the run's history with a client that has NO codec (what the Temporal server, its
database or an exported history hold) and scans the raw bytes: no business string, no secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from baton.codec_server import CodecServer
from baton.devstack import local
from baton.encryption import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    EncryptionConfigError,
    KeyRing,
    UnknownKeyError,
    new_key_line,
)
from baton.identity import CODEC_AUDIENCE, init_dev_issuer, issue_token
from baton.settings import Settings
from tests.conftest import _harness
from tests.support.scripted_model import ScriptedModelServer
from tests.support.serving import serving
from workflows.plugin import BatonPlugin


def ring(*ids: str, current: str | None = None, lines: dict[str, str] | None = None) -> KeyRing:
    lines = lines or {}
    spec = ",".join(lines.get(i) or new_key_line(i) for i in ids)
    return KeyRing.parse(spec, current)


def json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


# -- the codec --------------------------------------------------------------------------------


async def test_codec_round_trips_and_hides_the_plaintext() -> None:
    codec = EncryptionCodec(ring("k1"))
    original = json_payload({"memo": "Blue Yonder Freight invoice 4711", "amount": "12500.00"})
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"k1"
    assert b"Blue Yonder" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # the inner metadata is sealed too
    [opened] = await codec.decode([sealed])
    assert opened == original
    # a fresh nonce each time: the same payload never encrypts to the same bytes
    [again] = await codec.encode([original])
    assert again.data != sealed.data


async def test_rotation_old_key_id_still_decrypts_and_new_payloads_use_the_new_key() -> None:
    k1, k2 = new_key_line("k1"), new_key_line("k2")
    before = EncryptionCodec(KeyRing.parse(k1))
    [old] = await before.encode([json_payload("written before the rotation")])

    after = EncryptionCodec(KeyRing.parse(f"{k2},{k1}"))  # k2 current, k1 kept to read old data
    assert after.ring.current == "k2"
    [new] = await after.encode([json_payload("written after")])
    assert new.metadata[KEY_ID_METADATA] == b"k2"
    assert [p.data for p in await after.decode([old, new])] == [
        b'"written before the rotation"',
        b'"written after"',
    ]
    # BATON_ENCRYPTION_KEY_ID may pick a current key other than the first listed
    assert KeyRing.parse(f"{k2},{k1}", "k1").current == "k1"

    dropped_too_early = EncryptionCodec(KeyRing.parse(k2))
    with pytest.raises(UnknownKeyError, match="key id 'k1'.*add the old key back"):
        await dropped_too_early.decode([old])


async def test_tampered_or_relabelled_payloads_fail_authentication() -> None:
    lines = {"k1": new_key_line("k1"), "k2": new_key_line("k2")}
    codec = EncryptionCodec(ring("k1", "k2", lines=lines))
    [sealed] = await codec.encode([json_payload({"amount": "100.00"})])
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(ValueError, match="failed authentication"):
        await codec.decode([flipped])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_METADATA] = b"k2"  # the key id is bound into the ciphertext
    with pytest.raises(ValueError, match="failed authentication"):
        await codec.decode([relabelled])
    # payloads written before encryption was turned on still read
    plain = json_payload("legacy")
    assert await codec.decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("spec", "current", "expected"),
    [
        ("", None, "holds no key"),
        ("k1", None, "KEY_ID:BASE64_KEY"),
        ("k1:not base64!", None, "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", None, "must be 32 bytes"),
        (f"{new_key_line('k1')},{new_key_line('k1')}", None, "names 'k1' twice"),
        (new_key_line("k1"), "k9", "BATON_ENCRYPTION_KEY_ID 'k9' is not one of"),
    ],
)
def test_bad_key_configuration_names_the_variable(
    spec: str, current: str | None, expected: str
) -> None:
    with pytest.raises(EncryptionConfigError, match=expected):
        KeyRing.parse(spec, current)


def test_encryption_is_opt_in_by_configuration() -> None:
    assert Settings.from_env({}).payload_codec() is None  # the local stack's default: off
    on = Settings.from_env({"BATON_ENCRYPTION_KEYS": new_key_line("k7")})
    assert isinstance(on.payload_codec(), EncryptionCodec)
    assert "BATON_ENCRYPTION_KEYS" not in repr(on) and "k7:" not in repr(on)  # never printed
    with pytest.raises(ValueError, match="BATON_ENCRYPTION_KEYS is not"):
        Settings.from_env({"BATON_ENCRYPTION_KEY_ID": "k1"}).payload_codec()


# -- end to end: nothing readable in the history ----------------------------------------------


def is_patch_marker(event: HistoryEvent) -> bool:
    """A ``workflow.patched()`` marker: the SDK core writes its payload (the patch id, a code
    version name, never business data) itself, outside the Python data converter."""
    return (
        event.HasField("marker_recorded_event_attributes")
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
    )


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a protobuf message, but search attributes (Temporal indexes
    them, so they stay in clear by design: Baton's hold tenant, process, state, never data)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None or field.name == "search_attributes":
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values()
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
        elif not isinstance(value, Message):  # a repeated field
            values = value
        else:
            values = [value]
        for item in values:
            yield from payloads_in(item)


async def encrypting(temporal_client: Client, codec: EncryptionCodec) -> Client:
    """A client of the same server and namespace whose payloads go through ``codec``."""
    return await Client.connect(
        temporal_client.service_client.config.target_host,
        namespace=temporal_client.namespace,
        plugins=[BatonPlugin(codec)],
    )


async def test_history_holds_no_business_data_or_secrets(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    codec = EncryptionCodec(ring("k1"))
    encrypted = await encrypting(temporal_client, codec)
    api_key = f"sk-test-{uuid.uuid4().hex}"
    issuer = init_dev_issuer(tmp_path / "issuer")
    secret_rationale = f"reviewed with bank statement ref CONFIDENTIAL-{uuid.uuid4().hex[:10]}"
    async with _harness(encrypted, model_server, database_url, openai_api_key=api_key) as h:
        h.client.approval_trust = issuer.trust  # signed approvals on too: the JWT is a secret
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            status = await h.wait_for_pending(handle.id)
            request = status.pending[0]
            # the approver inbox reads the (encrypted) memo through the client's codec
            for _ in range(50):
                inbox = await h.client.inbox(task_queue=h.client.task_queue)
                if inbox:
                    break
                await asyncio.sleep(0.1)
            assert [p.request_id for p in inbox] == [request.request_id]
            token = issue_token(
                issuer.directory,
                user="carol",
                roles=request.approver_roles,
                workflow_id=handle.id,
                request_id=request.request_id,
                action_digest=request.action_digest,
            )
            h.client.approval_token = token
            await h.client.approve(handle.id, approver="carol", rationale=secret_rationale)
            result = await handle.result()  # the encrypting client reads it back in clear
        assert result.posted and result.memo

    history = await temporal_client.get_workflow_handle(handle.id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    raw += history.to_json().encode()

    business = {
        "approval rationale": secret_rationale,
        "close memo": result.memo[:40],
        "approver": "carol",
        "requested by": "alice",
        **{f"entry {e.entry_id} rationale": e.rationale[:30] for e in request.entries},
        **{f"posted account {p.account}": p.account for p in result.posted},
        **{f"finding {f.entry_id}": f.note[:30] for f in request.compliance_findings},
    }
    secrets = {
        "approval JWT": token,
        "JWT signature": token.rsplit(".", 1)[1],
        "OpenAI API key": api_key,
        "encryption key": base64.b64encode(codec.ring.keys["k1"]).decode(),
    }
    leaks = {name: text for name, text in {**business, **secrets}.items() if text.encode() in raw}
    assert not leaks, f"found in the raw history: {leaks}"

    # the scan can fail: decrypted, the very same history does hold the business data
    sealed = [p for e in history.events if not is_patch_marker(e) for p in payloads_in(e)]
    clear = [p for p in sealed if p.metadata.get("encoding") != ENCODING]
    assert sealed and not clear, f"payloads in clear: {clear[:3]}"
    opened = b"".join(p.SerializeToString() for p in await codec.decode(sealed))
    for name in ("approval rationale", "approver", "requested by"):
        assert business[name].encode() in opened, name
    assert token.encode() in opened  # it travelled, sealed, with the approval Update

    # the stock `temporal` CLI shows the history decrypted through the codec server, with a token
    server = CodecServer(codec, issuer.trust, roles=["payload-reader"])
    server.start()
    try:
        reader = issue_token(
            issuer.directory, user="audra", roles=["payload-reader"], audience=CODEC_AUDIENCE
        )
        show = (
            *("workflow", "show", "-w", handle.id, "-o", "json"),
            *("--address", temporal_client.service_client.config.target_host),
            *("--namespace", temporal_client.namespace, "--codec-endpoint", server.base_url),
        )
        shown = await temporal_cli(*show, "--codec-auth", f"Bearer {reader}")
        assert secret_rationale.encode() in payload_bytes(shown)
        refused = await temporal_cli(*show, check=False)
        assert secret_rationale.encode() not in payload_bytes(refused)
    finally:
        server.stop()


def payload_bytes(cli_json: str) -> bytes:
    """The decoded ``data`` of every payload in `temporal workflow show -o json` output."""
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    found.append(base64.b64decode(value + "=" * (-len(value) % 4)))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    start = cli_json.find("{")
    if start >= 0:
        walk(json.loads(cli_json[start:]))
    return b"".join(found)


async def temporal_cli(*args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        local.temporal_binary() or "temporal",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    if check:
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


# -- the codec server -------------------------------------------------------------------------


@pytest.fixture
def codec_server(tmp_path: Path) -> Iterator[tuple[CodecServer, Path]]:
    issuer = init_dev_issuer(tmp_path / "issuer")
    server = CodecServer(
        EncryptionCodec(ring("k1")),
        issuer.trust,
        roles=["payload-reader"],
        cors_origins=["http://localhost:8233"],
    )
    with serving(server):
        yield server, issuer.directory


def body_of(payloads: list[Payload]) -> dict[str, Any]:
    from google.protobuf import json_format

    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


async def test_codec_server_decodes_only_for_authorised_users(
    codec_server: tuple[CodecServer, Path],
) -> None:
    server, issuer_dir = codec_server
    [sealed] = await server.codec.encode([json_payload({"memo": "Lucerne Legal retainer"})])
    request = body_of([sealed])

    def token(user: str, roles: list[str], audience: str = CODEC_AUDIENCE, **kw: Any) -> str:
        return issue_token(issuer_dir, user=user, roles=roles, audience=audience, **kw)

    forged_dir = issuer_dir.parent / "someone-else"
    forged = issue_token(
        init_dev_issuer(forged_dir).directory,
        user="mallory",
        roles=["payload-reader"],
        audience=CODEC_AUDIENCE,
    )
    two_hours_ago = datetime.now(UTC).timestamp() - 7200
    refusals = {
        "no header": (None, 401, "Bearer"),
        "not bearer": ("Basic YWxpY2U6cHc=", 401, "Bearer"),
        "garbage": ("Bearer not.a.jwt", 401, "identity assertion"),
        "forged": (f"Bearer {forged}", 401, "unknown key id"),
        "approval audience": (
            f"Bearer {token('alice', ['payload-reader'], 'baton-approvals')}",
            401,
            "audience",
        ),
        "expired": (
            f"Bearer {token('alice', ['payload-reader'], now=two_hours_ago)}",
            401,
            "expired",
        ),
        "wrong role": (f"Bearer {token('bob', ['finance-controller'])}", 403, "lacks a role"),
    }
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for name, (auth, status, message) in refusals.items():
            headers = {"Authorization": auth} if auth else {}
            answer = await http.post("/decode", json=request, headers=headers)
            assert answer.status_code == status, name
            assert message in answer.json()["error"], name
            assert b"Lucerne" not in answer.content, name

        good = {"Authorization": f"Bearer {token('alice', ['payload-reader'])}"}
        answer = await http.post("/decode", json=request, headers=good)
        assert answer.status_code == 200
        decoded = answer.json()["payloads"][0]
        assert json.loads(base64.b64decode(decoded["data"])) == {"memo": "Lucerne Legal retainer"}

        # /encode round-trips through /decode
        plain = body_of([json_payload("hello")])
        sealed_doc = (await http.post("/encode", json=plain, headers=good)).json()
        assert sealed_doc["payloads"][0]["metadata"][KEY_ID_METADATA] == "azE="  # b"k1"
        back = (await http.post("/decode", json=sealed_doc, headers=good)).json()
        assert back == plain

        bad = await http.post("/decode", json={"payload": []}, headers=good)
        assert bad.status_code == 400 and "payloads" in bad.json()["error"]

        # CORS: the Web UI's origin gets a preflight answer; another origin does not
        ui = {"Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST"}
        pre = await http.options("/decode", headers=ui)
        assert pre.status_code == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        evil = await http.options("/decode", headers={**ui, "Origin": "https://evil.example"})
        assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers


async def test_demo_runs_with_encryption_and_signed_approvals_on(
    temporal_client: Client,
    model_server: ScriptedModelServer,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`baton demo` with both features configured: the CLI's client and the demo's worker encrypt,
    and the demo's approval carries a token from the dev issuer. After the close it runs every
    other process (auction, HR onboarding, customer onboarding from a CRM event, a support case),
    each approved by its human where one is asked for, each with its inspect command."""
    from baton.demo import run_demo
    from tests.conftest import make_settings
    from tests.test_router import catalogue

    issuer = init_dev_issuer(tmp_path / "issuer")
    models = tmp_path / "models.json"
    routes = catalogue(model_server)
    routes["task_classes"]["act"] = {"capability": "tool_use"}  # agents that act (the executor)
    for m in routes["models"]:
        m["capabilities"] = [*m["capabilities"], "tool_use"]
    models.write_text(json.dumps(routes))
    settings = make_settings(
        database_url,
        model_server,
        temporal_address=temporal_client.service_client.config.target_host,
        temporal_namespace=temporal_client.namespace,
        task_queue=f"tq-{uuid.uuid4().hex[:12]}",
        encryption_keys=new_key_line("k1"),
        approval_trust_file=issuer.trust_file,
        issuer_dir=issuer.directory,
        model_catalogue=models,
    )
    assert await run_demo(settings, tenant="acme", approver="carol", interactive=False) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    lines = out.splitlines()

    def step(prefix: str) -> int:
        [at] = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        return at

    # the close's duration is the close's own (start to close of its run), not the time until
    # the later processes finished (it once printed 529 s for a 17 s close)
    closed = re.search(r"^5\. closed acme \S+ in ([0-9.]+)s: ", lines[step("5. closed")])
    assert closed is not None, lines[step("5. closed")]
    [close_run] = [
        e
        async for e in temporal_client.list_workflows(
            f"TaskQueue = '{settings.task_queue}' AND WorkflowType = 'FinanceClose'"
        )
    ]
    assert close_run.start_time and close_run.close_time
    took = (close_run.close_time - close_run.start_time).total_seconds()
    assert abs(float(closed.group(1)) - took) <= 0.06, (closed.group(1), took)
    hr, customer, support = step("8. HR onboarding"), step("9. customer"), step("10. support")
    assert step("7. document reviews") < hr < customer < support
    assert "maya (engineering-manager) approved" in lines[hr]
    assert "aws:admin (approved by maya)" in lines[hr + 1]
    assert "-> baton audit show onboarding/acme/demo-" in lines[hr + 2]
    assert "via the CRM trigger (customer-onboarding/acme/cust-globex-demo" in lines[customer]
    assert "oscar (sales-manager) approved" in lines[customer]
    assert "1 x discount" in lines[customer + 1] and "15% discount" in lines[customer + 1]
    assert "-> baton customer result customer-onboarding/acme/" in lines[customer + 2]
    # the agent that acts: the plan carried out through governed tool calls, one line each
    assert lines[customer + 4].startswith("   agent that acts: onboarding_executor carried out")
    tool_lines = lines[customer + 5 : support]
    assert tool_lines and all(
        re.match(r"   - tool (grant_customer_entitlement|send_welcome_email): policy allow -> "
                 r"(discount|intro_email|task/\d+) committed as C-\w+$", line)
        for line in tool_lines
    ), tool_lines  # fmt: skip
    assert len(tool_lines) == int(re.search(r"in (\d+) governed", lines[customer + 4])[1])  # type: ignore[index]
    assert sum("send_welcome_email" in line for line in tool_lines) == 1
    assert "via queue support-queue-acme-demo" in lines[support]
    case_id = lines[support].split()[3]
    assert "billing, escalated; sam (support-lead) approved" in lines[support]
    assert lines[support + 1].startswith("   ticket resolved v1;")
    assert lines[support + 2] == f"   -> baton support case support-acme-{case_id} --wait"
    for at in (hr + 3, customer + 3, support + 3):
        assert lines[at].startswith(f"   web UI: {settings.ui_url}/namespaces/")
    finished = {
        e.workflow_type: e.status.name if e.status else ""
        async for e in temporal_client.list_workflows(
            f"TaskQueue = '{settings.task_queue}' AND WorkflowType != 'SupportCoordinator'"
        )
    }
    assert finished == {
        "FinanceClose": "COMPLETED",
        "DocumentReviewAllocation": "COMPLETED",
        "HrOnboarding": "COMPLETED",
        "CustomerOnboarding": "COMPLETED",
        "SupportCase": "COMPLETED",
    }
    [execution] = [
        e
        async for e in temporal_client.list_workflows(
            f"TaskQueue = '{settings.task_queue}' AND WorkflowType = 'FinanceClose'"
        )
    ]
    history = await temporal_client.get_workflow_handle(execution.id).fetch_history()
    sealed = [p for e in history.events if not is_patch_marker(e) for p in payloads_in(e)]
    assert sealed and all(p.metadata.get("encoding") == ENCODING for p in sealed)
    decision = next(
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    accepted = decision.workflow_execution_update_accepted_event_attributes
    [payload] = await settings.payload_codec().decode(
        list(accepted.accepted_request.input.args.payloads)
    )
    assert json.loads(payload.data)["assertion"]  # the demo's approval was signed


async def test_a_demo_step_that_does_not_finish_fails_clearly_within_its_bound(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str
) -> None:
    """No worker serves the run: the demo's wait gives up after its bound and the step's line
    says what failed and where to look (run_demo then exits 1)."""
    from baton.demo import finish_run, run_step
    from tests.conftest import make_settings
    from workflows.client import BatonClient
    from workflows.contracts import OnboardingInput

    settings = make_settings(database_url, model_server, task_queue=f"tq-{uuid.uuid4().hex[:12]}")
    client = BatonClient(temporal_client, task_queue=settings.task_queue)
    inp = OnboardingInput(
        tenant="acme", employee_id=f"E{uuid.uuid4().hex[:8]}", requested_by="hana"
    )
    handle = await client.start_onboarding(inp)
    try:
        wait = finish_run(client, settings, handle.id, approver="maya", rationale="x", timeout=1)
        lines, ok = await asyncio.wait_for(run_step("8. HR onboarding", wait), 10)
    finally:
        await handle.terminate("test over")
    assert not ok
    assert lines == [
        f"8. HR onboarding FAILED: DemoStepFailed: {handle.id} did not finish within 1s; "
        f"see {settings.workflow_url(handle.id)}"
    ]


async def test_failure_messages_are_encrypted_too(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str
) -> None:
    """A policy denial's reasons quote the entry (account, amount): with encryption on they are
    sealed in the history, and the encrypting client still reads them (since issue 16 the
    denied entry is held as an exception in the close's result instead of failing it)."""

    from tests.support.scripted_model import Fault

    codec = EncryptionCodec(ring("k1"))
    encrypted = await encrypting(temporal_client, codec)
    account = f"9999-wallet-{uuid.uuid4().hex[:8]}"
    bad = {
        "entries": [
            {
                "entry_id": "ADJ-X1",
                "account": account,
                "amount": "-250.00",
                "source_ids": ["B0001"],
                "rationale": "move cash to a wallet",
            }
        ]
    }
    async with _harness(encrypted, model_server, database_url) as h:
        h.model.script(Fault.reconciled(bad), match=h.period)
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            result = await handle.result()
    [held] = result.exceptions
    assert account in " ".join(held.reasons)  # decrypted for the client that has the key
    history = await temporal_client.get_workflow_handle(handle.id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert account.encode() not in raw
    assert b"move cash to a wallet" not in raw


async def test_the_codec_server_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`baton codec-server` as a user runs it: configured from the environment, refuses without a
    token, decodes with one, exits 0 on SIGTERM."""
    import signal
    import sys

    issuer = init_dev_issuer(tmp_path / "issuer")
    keys = new_key_line("k1")
    port = local.free_port()
    env = {
        **os.environ,
        "BATON_ENCRYPTION_KEYS": keys,
        "BATON_APPROVAL_TRUST": str(issuer.trust_file),
        "BATON_ISSUER_DIR": str(issuer.directory),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "baton.cli",
        "codec-server",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        [sealed] = await EncryptionCodec(KeyRing.parse(keys)).encode([json_payload("ok")])
        token = issue_token(
            issuer.directory, user="audra", roles=["payload-reader"], audience=CODEC_AUDIENCE
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    refused = await http.post("/decode", json=body_of([sealed]))
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert refused.status_code == 401
            answer = await http.post(
                "/decode", json=body_of([sealed]), headers={"Authorization": f"Bearer {token}"}
            )
            assert base64.b64decode(answer.json()["payloads"][0]["data"]) == b'"ok"'
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
