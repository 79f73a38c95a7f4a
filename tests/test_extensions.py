"""An extension written without editing Baton: the example package examples/vendor_invoice
(one governed action ``ap.pay_invoice`` with its undo, one agent, one Rego policy, one YAML
process), installed into the environment and found through its ``baton.extensions`` entry
point, run end to end on the real dev server against the real OPA evaluator, database and
openai SDK (the scripted model server answers the agent by the extension's stand-in rule)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio.client import WorkflowFailureError

from baton import extensions
from baton.cli_dsl import _print_result
from baton.settings import REPO_ROOT
from tests.conftest import Harness
from workflows.dsl import catalog
from workflows.dsl.client import start_process
from workflows.dsl.model import ProcessDefinition
from workflows.dsl.validate import load_definition, validate_text

EXAMPLE = REPO_ROOT / "examples" / "vendor_invoice"


def _installed() -> list[importlib.metadata.EntryPoint]:
    return [
        ep
        for ep in importlib.metadata.entry_points(group=extensions.ENTRY_POINT_GROUP)
        if ep.name == "vendor_invoice"
    ]


@pytest.fixture(scope="module")
def vendor_invoice() -> extensions.Registry:
    """The example, installed as a user would (`make install` does it; else pip here)."""
    if not _installed():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(EXAMPLE)],
            check=True,
        )
        importlib.invalidate_caches()
    found = _installed()
    assert found, "pip install -e examples/vendor_invoice did not register its entry point"
    return extensions.load(found)


@pytest.fixture
def process(vendor_invoice: extensions.Registry) -> ProcessDefinition:
    path = vendor_invoice.yaml_processes["vendor_invoice"].path
    assert len(path.read_text().splitlines()) <= 80
    return load_definition(path)


def invoice(h: Harness, **overrides: Any) -> dict[str, Any]:
    return {
        "tenant": h.tenant,
        "requested_by": "alice",
        "invoice_id": f"INV-{h.period}",
        "vendor": "Acme Paper",
        "amount": "120.00",
        "purchase_order": "PO-7",
        "po_vendor": "Acme Paper",
        "po_amount": "150.00",
        **overrides,
    }


async def run(h: Harness, d: ProcessDefinition, values: dict[str, Any]) -> Any:
    handle = await start_process(
        h.temporal, d, values, task_queue=h.client.task_queue, source="vendor_invoice"
    )
    return handle


def payments(h: Harness) -> list[dict[str, Any]]:
    with h.db.engine.connect() as conn:
        if not sa.inspect(conn).has_table("ap_payment"):
            return []
        rows = conn.execute(sa.text("SELECT * FROM ap_payment")).mappings().all()
    return [dict(r) for r in rows]


def actions(h: Harness, wid: str) -> list[str]:
    return [r.action for r in h.runtime.ledger.trail(wid)]


def failure(err: WorkflowFailureError) -> tuple[str | None, str]:
    cause: Any = err.cause
    while cause is not None and getattr(cause, "type", None) is None:
        cause = getattr(cause, "cause", None) or cause.__cause__
    return (getattr(cause, "type", None), str(cause))


def test_catalogue_lists_the_extension(vendor_invoice: extensions.Registry) -> None:
    pay = catalog.CONNECTORS["ap.pay_invoice"]
    assert pay.policy == "vendor_invoice/payment" and pay.undo == "ap.pay_invoice.compensate"
    assert pay.extension == "vendor_invoice"
    assert catalog.AGENTS["ap.check_invoice"].extension == "vendor_invoice"
    from baton.cli_catalog import catalogue_entries

    entries = {e["name"]: e for e in catalogue_entries()}
    assert entries["ap.pay_invoice"]["policy"] == "vendor_invoice/payment"
    assert "invoice_id" in entries["ap.pay_invoice"]["input_schema"]["properties"]
    assert "payment_id" in json.dumps(entries["ap.pay_invoice"]["output_schema"])
    assert entries["finance.post_journal_entry"]["extension"] is None
    from workflows.dsl.validate import json_schema

    text = json.dumps(json_schema(extensions=True))
    assert "ap.pay_invoice" in text and "ap.check_invoice" in text
    assert "purchase_order" in text  # the action's fields, for completion
    assert "ap.pay_invoice" not in json.dumps(json_schema())  # Baton's own catalogue only


def test_yaml_checks_extension_arguments(vendor_invoice: extensions.Registry) -> None:
    text = """
name: t
version: "1"
steps:
  - id: pay
    type: connector
    action: ap.pay_invoce
    with: {invoice_id: I}
  - id: pay2
    type: connector
    action: ap.pay_invoice
    with: {invoice_id: I, vendor: V, amount: "1", purchase_order: P, amont: "2"}
  - id: ok
    type: approval
    guards: pay2
"""
    _, issues = validate_text(text, "t.yaml")
    messages = [str(i) for i in issues]
    assert any("did you mean `ap.pay_invoice`?" in m and ":7:" in m for m in messages), messages
    assert any("no field 'amont'" in m and "did you mean `amount`?" in m for m in messages)


async def test_small_invoice_is_paid_with_audit(
    harness: Harness, process: ProcessDefinition, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    async with h.worker():
        handle = await run(h, process, invoice(h))
        result = await handle.result()
    [paid] = payments(h)
    assert paid["invoice_id"] == f"INV-{h.period}" and paid["status"] == "paid"
    assert paid["approved_by"] is None
    assert result.output["payment_id"] == paid["payment_id"]
    trail = h.runtime.ledger.trail(handle.id)
    done = [r for r in trail if r.action == "ap.pay_invoice.done"]
    assert len(done) == 1 and paid["payment_id"] in done[0].detail_json
    decisions = [r for r in trail if r.actor == "policy:vendor_invoice/payment"]
    assert [r.action for r in decisions] == ["policy.allow"]
    assert "agent.ap.check_invoice" in [r.action for r in trail]
    assert h.model.attempts("invoice_checker") == 1
    # `baton result RUN` later: the run's output
    assert await _print_result(h.temporal.get_workflow_handle(handle.id)) == 0
    assert json.loads(capsys.readouterr().out)["output"]["payment_id"] == paid["payment_id"]


async def test_blocked_vendor_is_denied_and_nothing_paid(
    harness: Harness, process: ProcessDefinition
) -> None:
    h = harness
    from vendor_invoice.payments import BLOCKED, METADATA

    with h.db.engine.begin() as conn:
        METADATA.create_all(conn)
        conn.execute(BLOCKED.insert().values(vendor="Acme Paper", reason="sanctions list"))
    async with h.worker():
        handle = await run(h, process, invoice(h))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    kind, message = failure(failed.value)
    assert kind == "PolicyDenied" and "sanctions list" in message
    assert payments(h) == []
    assert "policy.deny" in actions(h, handle.id)


async def test_large_invoice_waits_for_controller_then_pays(
    harness: Harness, process: ProcessDefinition
) -> None:
    h = harness
    values = invoice(h, amount="7000.00", po_amount="7000.00")
    async with h.worker():
        handle = await run(h, process, values)
        status = await h.wait_for_pending(handle.id)
        [request] = status.pending
        assert request.action == "ap.pay_invoice"
        assert "finance-controller" in request.approver_roles
        assert payments(h) == []  # held: nothing paid before a human said so
        await h.client.approve(handle.id, approver="carol", rationale="PO matches")
        result = await handle.result()
    [paid] = payments(h)
    assert paid["approved_by"] == "carol" and paid["status"] == "paid"
    assert result.output["payment_id"] == paid["payment_id"]
    trail = [r.action for r in h.runtime.ledger.trail(handle.id)]
    assert trail.count("ap.pay_invoice.done") == 1
    assert "policy.require_approval" in trail and "policy.allow" in trail


async def test_rejected_payment_fails_and_pays_nothing(
    harness: Harness, process: ProcessDefinition, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    async with h.worker():
        handle = await run(h, process, invoice(h, amount="9000.00", po_amount="9000.00"))
        await h.wait_for_pending(handle.id)
        await h.client.reject(handle.id, approver="frank", rationale="duplicate invoice")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    kind, message = failure(failed.value)
    assert kind == "ApprovalRejected" and "duplicate invoice" in message
    assert payments(h) == []
    # `baton result RUN` later: the failure's cause, exit 1
    code = await _print_result(h.temporal.get_workflow_handle(handle.id))
    err = capsys.readouterr().err
    assert code == 1 and f"{handle.id} failed: ApprovalRejected: frank reject" in err, err


async def test_failure_after_payment_voids_it(harness: Harness, process: ProcessDefinition) -> None:
    h = harness
    async with h.worker():
        handle = await run(h, process, invoice(h, fail_after_payment=True))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure(failed.value)[0] == "InjectedFailure"
    [voided] = payments(h)
    assert voided["status"] == "voided"
    trail = actions(h, handle.id)
    assert trail.index("ap.pay_invoice.done") < trail.index("ap.pay_invoice.compensated")


def test_example_policy_tests_pass(vendor_invoice: extensions.Registry) -> None:
    from activities.policy import run_rego_tests

    results = run_rego_tests(REPO_ROOT / "policy", extra_dirs=vendor_invoice.policy_dirs)
    mine = {r.name: r.passed for r in results if r.name.startswith("vendor_invoice.")}
    assert mine == {
        "vendor_invoice.payment_test.test_blocked_vendor_denied": True,
        "vendor_invoice.payment_test.test_large_payment_needs_controller": True,
        "vendor_invoice.payment_test.test_small_payment_allowed": True,
    }
    assert all(r.passed for r in results)


def test_a_python_process_registers_with_worker_client_and_cli() -> None:
    """registry.process(ProcessSpec): the worker registers its workflow, BatonClient.start and
    `baton start NAME` find it by its input or its name."""
    from pydantic import BaseModel

    from workflows.dsl.interpreter import ProcessWorkflow
    from workflows.registry import ProcessSpec, spec_for, spec_named, workflow_classes

    class RefundInput(BaseModel):
        order_id: str
        requested_by: str = "alice"

    spec = ProcessSpec(
        name="test_refund",
        workflow=ProcessWorkflow,  # any workflow; a real one is a GovernedProcess
        input=RefundInput,
        business_key=lambda inp: f"refund-{inp.order_id}",
        summary=lambda inp: f"Refund {inp.order_id}",
    )
    extensions.register(lambda registry: registry.process(spec), name="test_refund_extension")
    assert spec_named("test_refund") is spec
    assert spec_for(RefundInput(order_id="O-1")) is spec
    assert workflow_classes().count(ProcessWorkflow) == 1
    with pytest.raises(extensions.ExtensionError, match="already uses it"):
        extensions.register(
            lambda registry: registry.action(
                "finance.post_journal_entry",
                args=RefundInput,
                result=RefundInput,
                policy="x/y",
                run=lambda a, c: a,
            ),
            name="clashing_extension",
        )


async def test_an_unanswered_payment_approval_expires_and_pays_nothing(
    ts_harness: Harness, process: ProcessDefinition
) -> None:
    """The guarded approval's SLA (a day) passes on the time-skipping server: ApprovalExpired,
    nothing paid."""
    h = ts_harness
    async with h.worker():
        handle = await run(h, process, invoice(h, amount="8000.00", po_amount="8000.00"))
        await h.wait_for_pending(handle.id)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()  # waiting on the result lets the server skip the day
    kind, message = failure(failed.value)
    assert kind == "ApprovalExpired" and "everything done is undone" in message
    assert payments(h) == []
    assert "approval.expired" in actions(h, handle.id)


def test_the_cli_finds_the_installed_extension_by_its_entry_point(
    vendor_invoice: extensions.Registry, tmp_path: Any
) -> None:
    """A fresh `baton` process loads the extension from its entry point alone."""

    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "baton.cli", *args],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )

    listed = baton("catalog", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["ap.pay_invoice"]["policy"] == "vendor_invoice/payment"
    assert entries["ap.check_invoice"]["kind"] == "agent"
    schema = tmp_path / "schema.json"
    assert baton("schema", "--output", str(schema)).returncode == 0
    assert "ap.pay_invoice" in schema.read_text()
    path = vendor_invoice.yaml_processes["vendor_invoice"].path
    checked = baton("validate", str(path))
    assert checked.returncode == 0 and "ok (vendor_invoice v1" in checked.stdout, checked
    wrong = baton("catalog", "ap.pay_invoce")
    assert wrong.returncode == 2 and "did you mean `ap.pay_invoice`?" in wrong.stderr


async def test_a_retried_payment_pays_once_and_its_undo_runs_once(
    harness: Harness, vendor_invoice: extensions.Registry
) -> None:
    """The activities themselves (no workflow): an attempt retried under the same key returns
    the first outcome; the undo voids once, then is a no-op; an undo of what never ran too."""
    from temporalio.testing import ActivityEnvironment

    from workflows.contracts.extensions import CompensateActionInput, GovernedActionInput

    h = harness
    by_name = {
        getattr(fn, "__temporal_activity_definition").name: fn for fn in h.runtime.activities
    }
    pay, undo = by_name["ap.pay_invoice"], by_name["ap.pay_invoice.compensate"]
    args = {"invoice_id": "INV-R", "vendor": "Acme Paper", "amount": "99.00", "purchase_order": "P"}
    inp = GovernedActionInput(
        action="ap.pay_invoice", args=args, tenant=h.tenant, idempotency_key="wf/pay/1"
    )
    env = ActivityEnvironment()
    first = await env.run(pay, inp)
    again = await env.run(pay, inp)
    assert first.decision.verdict == "allow" and again == first
    assert [p["payment_id"] for p in payments(h)] == [first.result["payment_id"]]
    comp = CompensateActionInput(action="ap.pay_invoice", original_key="wf/pay/1")
    assert (await env.run(undo, comp)).undone is True
    assert (await env.run(undo, comp)).undone is False
    assert [p["status"] for p in payments(h)] == ["voided"]
    never = CompensateActionInput(action="ap.pay_invoice", original_key="wf/pay/none")
    assert (await env.run(undo, never)).undone is False


async def test_the_kill_switch_holds_an_extension_action_until_cleared(
    harness: Harness, process: ProcessDefinition
) -> None:
    """`baton kill set --scope agent:ap.pay_invoice` stops the payment inside its transaction:
    the run holds (nothing paid), and pays once the switch is cleared."""
    from activities.kill_switch import KillSwitch

    h = harness
    switch = KillSwitch(h.db, h.runtime.ledger)
    switch.engage("agent:ap.pay_invoice", reason="vendor master data migration", by="ops")
    async with h.worker():
        handle = await run(h, process, invoice(h))
        async with asyncio.timeout(30):
            while (await h.client.status(handle.id)).held_by is None:
                await asyncio.sleep(0.1)
        status = await h.client.status(handle.id)
        assert status.held_by is not None and status.held_by.scope == "agent:ap.pay_invoice"
        assert payments(h) == []
        switch.clear("agent:ap.pay_invoice", reason="migration done", by="ops")
        assert handle.id in await h.client.release_held()
        await handle.result()
    assert [p["status"] for p in payments(h)] == ["paid"]


async def test_baton_run_by_name_waits_and_prints_the_failure_cause(
    harness: Harness, vendor_invoice: extensions.Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """`baton run vendor_invoice --input ... --wait`: the extension's process by its name; a
    failed run prints its cause and exits 1."""
    import argparse
    from dataclasses import replace

    from baton.cli_dsl import cmd_run

    h = harness
    settings = replace(
        h.settings,
        temporal_address=h.temporal.service_client.config.target_host,
        task_queue=h.client.task_queue,
    )
    values = invoice(h, vendor="Other Paper")  # the checker finds a vendor mismatch
    args = argparse.Namespace(file="vendor_invoice", input=json.dumps(values), id=None, wait=True)
    async with h.worker():
        code = await cmd_run(args, settings)
    out, err = capsys.readouterr()
    assert code == 1 and "started vendor_invoice-" in out
    assert "failed: InvoiceMismatch: invoice INV-" in err, err
    assert payments(h) == []
