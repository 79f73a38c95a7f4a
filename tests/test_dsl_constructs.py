"""Each construct of the process language, run by the interpreter workflow on the real dev
server against the real finance connector (postings + reversals in SQLite), OPA evaluator and
openai SDK (scripted model server). Definitions are written inline as YAML and go through the
same validator as `baton validate` first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from tests.conftest import Harness
from tests.support.scripted_model import Fault
from workflows.dsl.client import send_event, start_process
from workflows.dsl.model import ProcessDefinition
from workflows.dsl.validate import load_definition, validate_text

HEADER = """
name: construct_test
version: "1"
input:
  tenant: {type: string}
  period: {type: string}
  requested_by: {type: string}
"""


def post(step_id: str, entry: str, amount: str = "-12.50", indent: int = 0) -> str:
    """A small allowed posting with its reversal as compensation (YAML)."""
    text = f"""
- id: {step_id}
  type: connector
  action: finance.post_journal_entry
  with:
    tenant: "${{input.tenant}}"
    period: "${{input.period}}"
    entry: {{entry_id: {entry}, account: 6100-bank-fees, amount: "{amount}",
             source_ids: [B0001], rationale: construct test}}
    preparer: "agent:reconciler"
    requested_by: "${{input.requested_by}}"
    idempotency_key: "${{workflow.id}}/{entry}"
  compensation:
    action: finance.reverse_journal_entry
    with: {{original_key: "${{workflow.id}}/{entry}", reason: undo,
            idempotency_key: "${{workflow.id}}/{entry}/reverse"}}
"""
    return "\n".join(" " * indent + line for line in text.strip("\n").splitlines())


def indented(text: str, by: int) -> str:
    """``text`` (YAML) with each line moved ``by`` spaces to the right."""
    return "\n".join(" " * by + line for line in text.strip("\n").splitlines())


def parallel(step_id: str, branches: dict[str, str], options: str = "") -> str:
    """A parallel step (YAML at indent 0): ``options`` (its other keys, e.g. ``mode: any``)
    and its branches, each a name and its steps (YAML at indent 0)."""
    lines = [f"- id: {step_id}", "  type: parallel"]
    lines += ["  " + option for option in options.splitlines()]
    lines.append("  branches:")
    for name, branch_steps in branches.items():
        lines += [f"    - name: {name}", "      steps:", indented(branch_steps, 8)]
    return "\n".join(lines)


def definition(steps: str, extra: str = "") -> ProcessDefinition:
    text = HEADER + "steps:\n" + steps + "\n" + extra
    parsed, issues = validate_text(text, "test.yaml")
    assert parsed is not None, "\n".join(map(str, issues))
    return parsed


async def start(h: Harness, d: ProcessDefinition) -> WorkflowHandle[Any, Any]:
    return await start_process(
        h.temporal, d, h.start_input(), task_queue=h.client.task_queue, source="test"
    )


async def failed_run(
    h: Harness, d: ProcessDefinition
) -> tuple[WorkflowHandle[Any, Any], WorkflowFailureError]:
    """Start ``d`` and await its end, which must be a failure: the run's handle and its failure
    (call it inside ``h.worker()``)."""
    handle = await start(h, d)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    return handle, failed.value


def trail(h: Harness, wid: str) -> list[Any]:
    return h.runtime.ledger.trail(wid)


def reversed_entries(h: Harness, wid: str) -> list[str]:
    return [
        json.loads(r.detail_json)["entry_id"]
        for r in trail(h, wid)
        if r.action == "ledger.reversed"
    ]


def failure_type(err: WorkflowFailureError) -> str | None:
    cause: BaseException | None = err.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return cause.type if isinstance(cause, ApplicationError) else None


async def wait_stage(h: Harness, wid: str, stage: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while (await h.client.status(wid)).stage != stage:
            await asyncio.sleep(0.05)


async def test_compensation_order_in_nested_parallel_branches(harness: Harness) -> None:
    h = harness
    fan_out = parallel(
        "fan_out",
        {
            "x": post("x1", "E-X1") + "\n" + post("x2", "E-X2"),
            "y": parallel(
                "inner",
                {
                    "y1": post("y1a", "E-Y1A") + "\n" + post("y1b", "E-Y1B"),
                    "y2": post("y2a", "E-Y2A"),
                },
            ),
        },
    )
    boom = """- id: boom
  type: fail
  error: InjectedFailure
  message: "fail after ${len(steps.fan_out.output.completed)} branches"
"""
    steps = indented(
        "\n".join([post("before", "E-BEFORE"), fan_out, post("after", "E-AFTER"), boom]), 2
    )
    async with h.worker():
        handle, failure = await failed_run(h, definition(steps))
    assert failure_type(failure) == "InjectedFailure"
    order = reversed_entries(h, handle.id)
    assert sorted(order) == sorted(
        ["E-BEFORE", "E-X1", "E-X2", "E-Y1A", "E-Y1B", "E-Y2A", "E-AFTER"]
    )
    # newest first: the step after the parallel, then the branches, then the step before it
    assert order[0] == "E-AFTER" and order[-1] == "E-BEFORE"
    # inside each branch newest first; the branches themselves undo concurrently
    assert order.index("E-X2") < order.index("E-X1")
    assert order.index("E-Y1B") < order.index("E-Y1A")
    actions = [r.action for r in trail(h, handle.id)]
    assert actions[-1] == "process.failed" and "process.started" in actions


#: the memo agent's step (YAML, a top-level step), given a period with nothing to report
MEMO = """  - id: memo
    type: agent
    agent: memo.write
    with: {tenant: "${input.tenant}", period: "${input.period}", matched: 0,
           unmatched_bank: 0, unmatched_ledger: 0, entries: [], compliance_summary: none}
"""


async def test_cancellation_mid_step_compensates_and_stops_the_agent(harness: Harness) -> None:
    h = harness
    h.model.script(Fault.delay(30), match=h.period)
    steps = post("before", "E-C1", indent=2) + "\n" + MEMO + post("after", "E-C2", indent=2)
    async with h.worker():
        handle = await start(h, definition(steps))
        await wait_stage(h, handle.id, "memo")
        await asyncio.sleep(0.5)  # the model call is in flight
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, CancelledError)
    assert reversed_entries(h, handle.id) == ["E-C1"]  # E-C2 never ran
    actions = [r.action for r in trail(h, handle.id)]
    assert actions[-1] == "process.cancelled"
    assert "ledger.posted" in actions and actions.count("ledger.posted") == 1


#: a loop over 1, 2, 3 collecting n * 10 except for 1, whose body switches on n (cases follow)
LOOP_OVER_1_2_3 = """  - id: each
    type: loop
    for_each: "${[1, 2, 3]}"
    as: n
    max_iterations: 5
    collect: "${n * 10}"
    collect_if: "${n != 1}"
    steps:
      - id: pick
        type: switch
        expression: "${n}"
        cases:
"""


async def test_loop_switch_condition_and_collect(harness: Harness) -> None:
    h = harness
    steps = (
        LOOP_OVER_1_2_3
        + """          - value: 2
            steps:
"""
        + post("post_two", "E-TWO", indent=14)
        + """
        default: []
      - id: big
        type: condition
        if: "${n > 2}"
        then:
          - {id: never, type: fail, error: NotReached, message: "n=${n}",
             needs: []}
        else: []
"""
    )
    # the condition's then-branch fails for n=3: the posting for n=2 is undone
    async with h.worker():
        handle, failure = await failed_run(h, definition(steps))
    assert failure_type(failure) == "NotReached"
    assert "n=3" in str(failure.cause)
    assert reversed_entries(h, handle.id) == ["E-TWO"]

    ok = (
        LOOP_OVER_1_2_3
        + """          - {value: 2, steps: [{id: two, type: wait_event, event: x, timeout: 0.1,
                                on_timeout: continue}]}
        default: []
"""
    )
    d = definition(ok, 'output: "${steps.each.output}"')
    async with h.worker():
        result = await (await start(h, d)).result()
    assert result.output == [20, 30]


async def test_while_loop_is_bounded(harness: Harness) -> None:
    h = harness
    steps = """  - id: forever
    type: loop
    while: "${true}"
    max_iterations: 3
    steps:
      - {id: body, type: wait_event, event: x, timeout: 0.1, on_timeout: continue}
"""
    async with h.worker():
        handle, failure = await failed_run(h, definition(steps))
    assert failure_type(failure) == "LoopLimitExceeded"


async def test_wait_for_event_keeps_the_definition_it_started_with(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    text = (
        HEADER
        + """steps:
  - id: invoice
    type: wait_event
    event: invoice.received
    timeout: 60
output: {got: "${steps.invoice.output.amount}", version: one}
"""
    )
    file = tmp_path / "p.yaml"
    file.write_text(text)
    async with h.worker():
        handle = await start(h, load_definition(file))
        await wait_stage(h, handle.id, "invoice: waiting for event invoice.received")
        # editing the file does not change the running instance
        file.write_text(text.replace("version: one", "version: two"))
        await send_event(h.temporal, handle.id, "invoice.received", {"amount": 42})
        result = await handle.result()
    assert result.output == {"got": 42, "version": "one"}

    timed_out = HEADER + (
        "steps:\n  - {id: invoice, type: wait_event, event: never, timeout: 0.5}\n"
    )
    carry_on = timed_out.replace("timeout: 0.5}", "timeout: 0.5, on_timeout: continue}")
    async with h.worker():
        handle, failure = await failed_run(h, definition(timed_out.split("steps:\n")[1]))
        assert failure_type(failure) == "EventTimeout"
        d = definition(carry_on.split("steps:\n")[1], 'output: "${steps.invoice.output}"')
        assert (await (await start(h, d)).result()).output is None


async def test_parallel_any_cancels_and_undoes_the_losing_branch(harness: Harness) -> None:
    h = harness
    steps = (
        """  - id: race
    type: parallel
    mode: any
    branches:
      - name: fast
        steps:
"""
        + post("fast_post", "E-FAST", indent=10)
        + """
          - {id: fast_pause, type: wait_event, event: x, timeout: 1.5, on_timeout: continue,
             needs: [fast_post]}
      - name: slow
        steps:
"""
        + post("slow_post", "E-SLOW", indent=10)
        + """
          - {id: slow_wait, type: wait_event, event: never, timeout: 600, needs: [slow_post]}
"""
    )
    d = definition(steps, 'output: "${steps.race.output}"')
    async with h.worker():
        handle = await start(h, d)
        result = await handle.result()
    assert result.output == {"completed": ["fast"], "cancelled": ["slow"], "failed": []}
    assert reversed_entries(h, handle.id) == ["E-SLOW"]


async def test_parallel_n_of_tolerates_a_failed_branch(harness: Harness) -> None:
    h = harness
    n_of_2 = "mode: n_of\nn: 2"
    broken = "- {id: pb, type: fail, error: Broken, message: b broke}"
    quorum = {"a": post("pa", "E-NA"), "b": broken, "c": post("pc", "E-NC")}
    steps = indented(parallel("quorum", quorum, n_of_2), 2)
    d = definition(steps, 'output: "${steps.quorum.output}"')
    async with h.worker():
        result = await (await start(h, d)).result()
    assert sorted(result.output["completed"]) == ["a", "c"]
    assert result.output["failed"] == ["b"] and result.output["cancelled"] == []

    def pause(step_id: str) -> str:  # lets branch a post first
        return (
            f"- {{id: {step_id}, type: wait_event, event: x, timeout: 1.5, on_timeout: continue}}\n"
        )

    # two of three failing: no quorum, the run fails and the branch that posted is undone
    quorum = {
        "a": post("pa", "E-NQ"),
        "b": pause("wb") + "- {id: pb, type: fail, error: Broken, message: b broke}",
        "c": pause("wc") + "- {id: pc, type: fail, error: Broken, message: c broke}",
    }
    steps = indented(parallel("quorum", quorum, n_of_2), 2)
    async with h.worker():
        handle, failure = await failed_run(h, definition(steps))
    assert failure_type(failure) == "ParallelBranchesFailed"
    assert "b broke" in str(failure.cause) and "c broke" in str(failure.cause)
    assert reversed_entries(h, handle.id) == ["E-NQ"]


async def test_subprocess_runs_as_a_child_workflow(harness: Harness) -> None:
    h = harness
    extra = (
        """subprocesses:
  book:
    input:
      tenant: {type: string}
      period: {type: string}
      requested_by: {type: string}
    steps:
"""
        + post("child_post", "E-CHILD", indent=6)
        + """
    output: "${steps.child_post.output.posting_id}"
output: "${steps.child.output}"
"""
    )
    steps = """  - id: child
    type: subprocess
    process: book
    input: {tenant: "${input.tenant}", period: "${input.period}",
            requested_by: "${input.requested_by}"}
"""
    async with h.worker():
        handle = await start(h, definition(steps, extra))
        result = await handle.result()
    assert isinstance(result.output, str) and result.output
    child = h.runtime.ledger.trail(f"{handle.id}/child")
    assert "ledger.posted" in [r.action for r in child]

    # in a loop: one child per iteration, each with its own workflow id
    looped = """  - id: twice
    type: loop
    for_each: "${[1, 2]}"
    max_iterations: 2
    steps:
      - id: child
        type: subprocess
        process: book
        input: {tenant: "${input.tenant}", period: "${input.period}",
                requested_by: "${input.requested_by}"}
"""
    async with h.worker():
        handle = await start(h, definition(looped, extra.replace("${steps.child.output}", "x")))
        await handle.result()
    for child_id in (f"{handle.id}/child", f"{handle.id}/child-2"):
        assert "ledger.posted" in [r.action for r in h.runtime.ledger.trail(child_id)]


async def test_policy_gate_deny_fails_and_retry_override_is_obeyed(harness: Harness) -> None:
    h = harness
    deny = """  - id: gate
    type: policy
    policy: baton/finance/posting
    subject: E-BAD
    input:
      action: post_journal_entry
      tenant: "${input.tenant}"
      period: {id: "${input.period}", status: open}
      entry: {entry_id: E-BAD, account: 9999-crypto-wallet, amount: -250.0, source_ids: [B1]}
      preparer: "agent:reconciler"
      requested_by: "${input.requested_by}"
      compliance_flagged: false
"""
    async with h.worker():
        handle, failure = await failed_run(h, definition(deny))
    assert failure_type(failure) == "PolicyDenied"
    assert "9999-crypto-wallet" in str(failure.cause)

    h.model.script(Fault.status(500), Fault.status(500), Fault.status(500), match=h.period)
    agent = MEMO + "    retry: {maximum_attempts: 1}\n"
    async with h.worker():
        handle, _ = await failed_run(h, definition(agent))
    # one attempt (the preset would have made 3, and the second would have been answered): the
    # router's requests within it go to the cheap model, its backup endpoint, then the strong
    # model (its us endpoint is outside the tenant's residency, so nothing is sent there)
    calls = [r for r in h.model.requests if h.period in r["raw"]]
    assert [(r["path"], r["body"]["model"]) for r in calls] == [
        ("/v1/chat/completions", "baton-rules-small"),
        ("/backup/v1/chat/completions", "baton-rules-small"),
        ("/v1/chat/completions", "baton-rules-large"),
    ]


async def test_bad_start_input_names_the_field_and_starts_nothing(harness: Harness) -> None:
    h = harness
    d = definition("  - {id: nothing, type: fail, error: Never, message: never}\n")
    with pytest.raises(ValueError, match="period: required"):
        await start_process(
            h.temporal, d, {"tenant": "acme", "requested_by": "x"}, task_queue="unused"
        )
    with pytest.raises(ValueError, match="tenant: expected string"):
        await start_process(h.temporal, d, {**h.start_input(), "tenant": 3}, task_queue="unused")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  - {id: bad, type: fail, error: E, message: \"${number('abc')}\"}\n", "not a number"),
        ('  - {id: bad, type: fail, error: E, message: "${1 / 0}"}\n', "division by zero"),
        (
            "  - {id: w, type: wait_event, event: x, timeout: 0.1, on_timeout: continue}\n"
            '  - {id: bad, type: loop, for_each: "${steps.w.output}", max_iterations: 2,\n'
            "     steps: [{id: b, type: fail, error: E, message: m}]}\n",
            "for_each did not give a list",
        ),
    ],
)
async def test_runtime_errors_fail_the_run_instead_of_sticking(
    harness: Harness, steps: str, message: str
) -> None:
    h = harness
    async with h.worker():
        handle = await start(h, definition(steps))
        async with asyncio.timeout(20):
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
    assert failure_type(failed.value) == "ProcessDefinitionError"
    assert "step 'bad'" in str(failed.value.cause) and message in str(failed.value.cause)


async def test_each_activity_summary_names_its_step(harness: Harness) -> None:
    h = harness
    steps = post("book_fee", "E-S1", indent=2) + "\n"
    async with h.worker():
        handle = await start(h, definition(steps))
        await handle.result()
    converter = h.temporal.data_converter.payload_converter
    summaries = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            summaries.append(converter.from_payload(event.user_metadata.summary, str))
    assert any(s.startswith("book_fee: finance.post_journal_entry") for s in summaries), summaries


async def test_histories_replay_deterministically(harness: Harness) -> None:
    """The interpreter's command sequence is a function of the definition and the history: a
    finished run (nested parallel, loop, compensations) replays without nondeterminism."""
    from temporalio.worker import Replayer

    from workflows.dsl.interpreter import ProcessWorkflow
    from workflows.plugin import BatonPlugin

    h = harness
    loop = """- id: each
  type: loop
  for_each: "${['E-RB1', 'E-RB2']}"
  as: e
  max_iterations: 2
  steps:
    - {id: pause, type: wait_event, event: x, timeout: 0.1, on_timeout: continue}
"""
    fan = parallel("fan", {"a": post("pa", "E-RA"), "b": loop})
    stop = "- {id: stop, type: fail, error: InjectedFailure, message: stop}"
    steps = indented(fan + "\n" + stop, 2)
    async with h.worker():
        handle, _ = await failed_run(h, definition(steps))
    history = await handle.fetch_history()
    await Replayer(workflows=[ProcessWorkflow], plugins=[BatonPlugin()]).replay_workflow(history)
    assert reversed_entries(h, handle.id) == ["E-RA"]


async def test_a_connector_step_holds_while_the_kill_switch_is_engaged(harness: Harness) -> None:
    """The interpreter runs agent and connector steps through the kill-switch gate: the step
    holds (status held_by, BatonHeld) until the switch is cleared, then runs."""
    from activities.kill_switch import KillSwitch
    from workflows import visibility

    h = harness
    switch = KillSwitch(h.db, h.runtime.ledger, ttl_seconds=0)
    switch.engage(f"tenant:{h.tenant}", reason="bank feed corrupted", by="ops")
    async with h.worker():
        handle = await start(h, definition(post("book", "E-KS", indent=2) + "\n"))
        async with asyncio.timeout(30):
            while (await h.client.status(handle.id)).held_by is None:
                await asyncio.sleep(0.1)
        assert (await handle.describe()).typed_search_attributes.get(visibility.HELD) is True
        assert not [r for r in trail(h, handle.id) if r.action == "ledger.posted"]
        switch.clear(f"tenant:{h.tenant}", reason="feed fixed", by="ops")
        await handle.signal("kill_switch_released")
        await handle.result()
    actions = [r.action for r in trail(h, handle.id)]
    assert "kill_switch.held" in actions and "kill_switch.released" in actions
    assert actions.count("ledger.posted") == 1


GOVERNED = """  - id: entries
    type: set
    values:
      entries:
        - {entry_id: G1, account: 6100-bank-fees, amount: "-12.50", source_ids: [B0001],
           rationale: construct test}
        - {entry_id: G2, account: 6100-bank-fees, amount: "-7.25", source_ids: [B0002],
           rationale: construct test}
  - id: post
    type: governed
    action: finance.post_journal_entry
    for_each: "${vars.entries}"
    as: entry
    subject: "${entry.entry_id}"
    with:
      tenant: "${input.tenant}"
      period: "${input.period}"
      entry: "${entry}"
      preparer: "agent:reconciler"
      requested_by: "${input.requested_by}"
      idempotency_key: "${workflow.id}/${entry.entry_id}"
    compensation:
      action: finance.reverse_journal_entry
      with: {original_key: "${workflow.id}/${entry.entry_id}", reason: undo,
             idempotency_key: "${workflow.id}/${entry.entry_id}/reverse"}
  - id: approve
    type: approval
    guards: post
    entries: "${held}"
"""


async def test_a_governed_step_policy_allows_asks_nobody_and_is_undone_once(
    harness: Harness,
) -> None:
    """`type: governed` over two small entries: policy allows both in the postings' own
    transactions, so the approval guarding the step asks nobody (`not_needed`); a later failure
    reverses each posting once, newest first (each undo registered before its posting)."""
    h = harness
    output = 'output: {approval: "${steps.approve.output.outcome}", ' + (
        "posted: \"${pluck(steps.post.output, 'posting_id')}\"}"
    )
    async with h.worker():
        handle = await start(h, definition(GOVERNED, output))
        result = await handle.result()
        assert (await h.client.status(handle.id)).pending == []
    assert result.output["approval"] == "not_needed"
    assert len(result.output["posted"]) == 2 and all(result.output["posted"])

    failing = GOVERNED + "  - {id: boom, type: fail, error: Boom, message: later failure}\n"
    async with h.worker():
        handle, failure = await failed_run(h, definition(failing))
    assert failure_type(failure) == "Boom"
    assert reversed_entries(h, handle.id) == ["G2", "G1"]
