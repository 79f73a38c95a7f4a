"""`baton validate`: every error of a definition, each at file:line:column with a plain message;
the expression language; the committed JSON Schema; and a fuzz test (hypothesis) that feeds
malformed definitions and expects validation errors, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton.settings import REPO_ROOT
from workflows.dsl import expressions as ex
from workflows.dsl.validate import schema_text, validate_text

FINANCE = (REPO_ROOT / "processes" / "finance_close.yaml").read_text()

BAD = """\
name: bad
version: "1"
input:
  tenant: {type: string}
  period: {type: string}
steps:
  - id: a
    type: connector
    action: finance.collect_period_data
    with: {tenant: "${input.tenant}", period: "${steps.b.output.period}"}
  - id: b
    type: connector
    action: finance.reconcile_transactions
    with: {data: "${steps.a.output}", date_tolerance_days: "${steps.a.output.tenant}"}
  - id: c
    type: connector
    action: finance.post_journal_entry
    with:
      tenant: "${input.tenantx}"
      period: "${steps.nope.output}"
      entry: 3
      preparer: x
      requested_by: "${input.period}"
      idempotency_key: "${len(}"
  - id: d
    type: agent
    agent: memo.writ
  - id: e
    type: loop
    max_iterations: 3
    for_each: "${steps.a.output.ledger}"
    steps:
      - {id: f, type: fail, error: X, message: "${item.nothing} ${foo}"}
"""


def issues(text: str) -> list[str]:
    definition, found = validate_text(text, "p.yaml")
    assert (definition is None) == bool(found)
    return [str(i) for i in found]


def assert_each_starts_with(found: list[str], expected: list[str]) -> None:
    """As many messages as expected, each starting with its expected text (in order)."""
    assert len(found) == len(expected), "\n".join(found)
    for line, want in zip(found, expected, strict=True):
        assert line.startswith(want), f"{line!r} does not start with {want!r}"


def test_the_finance_close_definition_is_valid() -> None:
    assert issues(FINANCE) == []


def test_every_error_is_reported_with_line_and_column() -> None:
    found = issues(BAD)
    expected = [
        "p.yaml:7:5: cycle: a -> b -> a",
        "p.yaml:10:50: undefined variable steps.b.output.period",
        "p.yaml:14:60: type mismatch: ReconcileInput.date_tolerance_days expects integer",
        "p.yaml:15:5: step 'c' runs the sensitive action 'finance.post_journal_entry' and has "
        "no compensation",
        "p.yaml:19:18: undefined variable input.tenantx",
        "p.yaml:20:18: unknown step reference 'nope'",
        "p.yaml:21:14: type mismatch: PostEntryInput.entry expects object, but 3 is integer",
        "p.yaml:24:31: expression: expected a value, found the end of the expression",
        "p.yaml:27:12: unknown agent task 'memo.writ'",
        "p.yaml:33:51: undefined variable item.nothing",
        "p.yaml:33:67: undefined variable 'foo'",
    ]
    assert_each_starts_with(found, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nversion: '1'\nsteps: [\n", "p.yaml:4:1: YAML:"),
        ("name: x\nname: y\nversion: '1'\nsteps: []\n", "p.yaml:2:1: duplicate key 'name'"),
        ("name: x\nversion: '1'\nsteps: []\n", "p.yaml:3:1: steps: List should have at least 1"),
        (
            "name: x\nversion: '1'\nsteps:\n  - id: a\n    type: warp\n",
            "p.yaml:4:5: steps.0: Input tag 'warp' found using 'type' does not match",
        ),
        (
            "name: x\nversion: '1'\nsteps:\n  - {id: a, type: fail, error: E, message: m,"
            " colour: red}\n",
            "p.yaml:4:47: steps.0.fail.colour: unknown field 'colour'",
        ),
        (
            "name: x\nversion: '1'\nsteps:\n  - {id: a, type: fail, error: E, message: m}\n"
            "  - {id: a, type: fail, error: E, message: m}\n",
            "p.yaml:5:10: duplicate step id 'a'",
        ),
        ("", "p.yaml:1:1: the file is empty"),
        ("- 1\n- 2\n", "p.yaml:1:1: expected a mapping"),
    ],
)
def test_shape_and_yaml_errors(text: str, expected: str) -> None:
    found = issues(text)
    assert any(f.startswith(expected) for f in found), found


def test_cross_branch_and_self_references_are_refused() -> None:
    text = """\
name: x
version: "1"
steps:
  - id: par
    type: parallel
    branches:
      - name: one
        steps: [{id: w1, type: wait_event, event: e, timeout: 1}]
      - name: two
        steps: [{id: w2, type: wait_event, event: e, timeout: "${steps.w1.output.t}"}]
  - id: loop
    type: loop
    for_each: "${[1]}"
    max_iterations: 2
    steps: [{id: inner, type: fail, error: E, message: "${steps.loop.output}"}]
  - id: n_of
    type: parallel
    mode: n_of
    n: 3
    branches: [{name: a, steps: [{id: z, type: fail, error: E, message: m}]}]
"""
    found = issues(text)
    assert any("runs in another branch of 'par'" in f for f in found), found
    assert any("step 'inner' refers to 'loop', which it runs inside" in f for f in found), found
    assert any("mode n_of needs n between 1 and the number of branches (1)" in f for f in found)


def test_json_schema_file_is_up_to_date() -> None:
    committed = (REPO_ROOT / "processes" / "process.schema.json").read_text()
    assert committed == schema_text(), (
        "run: baton schema --builtin --output processes/process.schema.json"
    )
    schema = json.loads(committed)
    assert schema["title"] == "Baton process definition"
    assert {"name", "version", "steps"} <= set(schema["required"])


def test_the_cli_reports_errors_and_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    baton = [sys.executable, "-m", "baton.cli"]
    ok = subprocess.run(
        [*baton, "validate", str(REPO_ROOT / "processes" / "finance_close.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok (finance_close" in ok.stdout
    failed = subprocess.run(
        [*baton, "validate", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1
    lines = failed.stdout.strip().splitlines()
    assert len(lines) == 11 and all(line.startswith(f"{bad}:") for line in lines)


# -- the expression language ----------------------------------------------------------------


def test_expressions_evaluate_over_data_only() -> None:
    scope = {"steps": {"a": {"output": {"xs": [{"v": 1}, {"v": 2}], "s": "deny"}}}}
    assert ex.render("${len(steps.a.output.xs) == 2 and steps.a.output.s == 'deny'}", scope)
    assert ex.render("${pluck(where(steps.a.output.xs, 'v', 2), 'v')}", scope) == [2]
    assert ex.render("n=${steps.a.output.xs[1].v + 1}", scope) == "n=3"
    assert ex.render("${-steps.a.output.xs[0].v * 2}", scope) == -2
    assert ex.render({"k": ["${number('12.50')}"]}, scope) == {"k": [12.5]}
    # no attribute access on Python objects: a name is only ever a key of the data
    with pytest.raises(ex.ExpressionError, match="no field '__class__'"):
        ex.render("${steps.__class__}", scope)
    with pytest.raises(ex.ExpressionError, match="cannot look up"):
        ex.render("${steps.a.output.s.upper}", scope)
    with pytest.raises(ex.ExpressionError, match="unknown function 'eval'"):
        ex.parse("eval('1')")
    with pytest.raises(ex.ExpressionError, match="division by zero"):
        ex.render("${1 / 0}", scope)
    with pytest.raises(ex.ExpressionError, match="cannot compare"):
        ex.render("${'a' < 1}", scope)


# -- fuzz: malformed definitions give validation errors, never a crash --------------------------

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    issues(text)  # never raises; a definition or a list of issues


@FUZZ
@given(st.data())
def test_fuzz_mutated_finance_definition(data: st.DataObject) -> None:
    lines = FINANCE.splitlines()
    kind = data.draw(st.sampled_from(["drop", "insert", "replace", "truncate", "dup"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    junk = data.draw(
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    "  - id: x",
                    "    type: loop",
                    '    with: "${steps.propose.output.entries[0]}"',
                    "${",
                    "    if: ${",
                    "      - *nope",
                    "  foo: [1, {",
                    "    needs: [collect, collect]",
                    "    compensation: 3",
                ]
            ),
        )
    )
    if kind == "drop":
        del lines[i]
    elif kind == "insert":
        lines.insert(i, junk)
    elif kind == "replace":
        lines[i] = junk
    elif kind == "truncate":
        lines = lines[:i]
    else:
        lines.insert(i, lines[i])
    issues("\n".join(lines))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "type", "steps", "with", "if", "then", "branches", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.from_regex(r"[a-z]{1,6}", fullmatch=True)},
            optional={
                "type": st.sampled_from(
                    [
                        "agent",
                        "connector",
                        "policy",
                        "approval",
                        "parallel",
                        "loop",
                        "switch",
                        "condition",
                        "fail",
                        "wait_event",
                        "subprocess",
                        "nope",
                    ]
                ),
                "with": json_values,
                "steps": json_values,
                "if": st.text(max_size=20).map(lambda t: "${" + t + "}"),
                "action": st.sampled_from(["finance.post_journal_entry", "x.y"]),
            },
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_random_step_trees_are_refused_with_positions(steps: list[dict[str, object]]) -> None:
    doc = {"name": "fuzz", "version": "1", "steps": steps}
    import yaml

    found = issues(yaml.safe_dump(doc))
    # none of these is a complete, valid step (fail needs error+message, etc.)
    assert found and all(":" in f for f in found)


EXPRESSION_TOKENS = st.sampled_from(
    [
        "steps",
        "input",
        "workflow",
        "entry",
        ".",
        "output",
        "propose",
        "entries",
        "[",
        "]",
        "0",
        "(",
        ")",
        ",",
        "len",
        "pluck",
        "'x'",
        "==",
        "and",
        "not",
        "-",
        "+",
        "1.5",
        "null",
        "id",
        "period",
        "reconcile",
        "unmatched_bank",
        "where",
        "digest",
        "}",
        "${",
        " ",
    ]
)


@FUZZ
@given(st.data())
def test_fuzz_expressions_inside_a_valid_definition(data: st.DataObject) -> None:
    """Random token soup in place of one expression: the parser and the type checker report
    it (or accept it), they never crash."""
    import re

    spots = [m.span(1) for m in re.finditer(r"\$\{([^}]*)\}", FINANCE)]
    start, end = data.draw(st.sampled_from(spots))
    soup = "".join(data.draw(st.lists(EXPRESSION_TOKENS, min_size=0, max_size=12)))
    issues(FINANCE[:start] + soup + FINANCE[end:])


def test_recursive_subprocesses_are_refused() -> None:
    text = """\
name: x
version: "1"
steps:
  - {id: go, type: subprocess, process: ping}
subprocesses:
  ping:
    steps:
      - {id: to_pong, type: subprocess, process: pong}
  pong:
    steps:
      - {id: to_ping, type: subprocess, process: ping}
"""
    found = issues(text)
    assert any(
        f.startswith("p.yaml:11:50: subprocess 'ping' starts itself (through 'pong')")
        for f in found
    ), found
    assert any(f.startswith("p.yaml:8:50: subprocess 'pong' starts itself") for f in found), found


def test_shape_errors_do_not_hide_the_other_errors() -> None:
    """A step with a shape error is reported, and the rest is still checked for meaning."""
    text = """\
name: mixed
version: "1"
input:
  tenant: {type: string}
steps:
  - id: a
    type: connector
    action: finance.collect_period_data
    with: {tenant: "${input.tenant}", period: "${input.nope}"}
  - id: b
    type: connector
    colour: red
    action: finance.reconcile_transactions
    with: {data: "${steps.a.output}"}
  - id: c
    type: fail
    error: E
    message: "${steps.b.output.matches} ${steps.zzz.output}"
"""
    assert issues(text) == [
        "p.yaml:9:50: undefined variable input.nope: the process declares no input 'nope' "
        "(inputs: tenant)",
        "p.yaml:12:5: steps.1.connector.colour: unknown field 'colour'",
        "p.yaml:18:43: unknown step reference 'zzz' (steps: a, c)",
    ]


def test_variables_must_be_set_somewhere_and_if_is_lazy() -> None:
    text = """\
name: x
version: "1"
steps:
  - {id: init, type: set, values: {count: 0}}
  - {id: use, type: fail, error: E, message: "${vars.count} ${vars.total}"}
"""
    assert issues(text) == [
        "p.yaml:5:63: undefined variable vars.total: no set step assigns 'total' (assigned: count)"
    ]
    # only the chosen branch is evaluated: the empty list is never indexed
    assert ex.render("${if(len(xs) > 0, xs[0], 'none')}", {"xs": []}) == "none"
    assert ex.render("${if(len(xs) > 0, xs[0], 'none')}", {"xs": ["a"]}) == "a"


TYPED = """\
name: typed
version: "1"
input:
  tenant: {type: string}
  period: {type: string}
steps:
  - id: collect
    type: connector
    action: finance.collect_period_data
    with: {tenant: "${input.tenant}", period: "${input.period}"}
  - id: propose
    type: agent
    agent: reconciler.propose_adjustments
    with: {tenant: "${input.tenant}", period: "${input.period}", unmatched_bank: [],
           unmatched_ledger: [], duplicate_ledger: [], duplicate_ledger_ids: []}
  - id: checks
    type: set
    values:
      many: "${steps.collect.output.ledger > 3}"
      double: "${steps.propose.output.entries[0].amount * 2}"
      fine: "${number(steps.propose.output.entries[0].amount) * 2}"
      counted: "${len(steps.collect.output.ledger) > 3}"
      text: "${'amount ' + steps.propose.output.entries[0].amount}"
  - id: memo
    type: agent
    agent: memo.write
    with:
      tenant: "${input.tenant}"
      period: "${input.period}"
      matched: 0
      unmatched_bank: 0
      unmatched_ledger: 0
      compliance_summary: none
      entries:
        - {entry_id: E1, account: 6100-bank-fees, amont: "1.00", source_ids: [B1], rationale: r}
  - id: memo2
    type: agent
    agent: memo.writ
    needs: [colect]
"""


def test_types_of_comparisons_arithmetic_and_literal_list_items() -> None:
    found = issues(TYPED)
    expected = [
        "p.yaml:19:16: expression: cannot compare steps.collect.output.ledger (array) > 3 "
        "(number): compare len(...) instead",
        "p.yaml:20:18: expression: steps.propose.output.entries[].amount is a decimal carried "
        "as a string: write number(",
        "p.yaml:35:9: MemoInput.entries[0] needs field 'amount'",
        "p.yaml:35:51: MemoInput.entries[0] has no field 'amont' (did you mean `amount`?)",
        "p.yaml:38:12: unknown agent task 'memo.writ' (did you mean `memo.write`?)",
        "p.yaml:39:13: unknown step reference 'colect' in needs (did you mean `collect`?)",
    ]
    assert_each_starts_with(found, expected)


def test_an_approval_without_guards_needs_its_fields_and_guards_needs_a_governed_step() -> None:
    text = """\
name: x
version: "1"
steps:
  - {id: collect, type: connector, action: finance.collect_period_data,
     with: {tenant: a, period: b}}
  - {id: ask, type: approval, request_summary: s}
  - {id: ask2, type: approval, guards: collect}
  - {id: ask3, type: approval, guards: colect}
"""
    found = issues(text)
    assert any(
        ":6:" in f and "without guards needs action, payload, obligations, requested_by" in f
        for f in found
    ), found
    assert any(
        ":7:" in f and "guards 'collect': that step runs no governed action" in f for f in found
    ), found
    assert any(":8:" in f and "(did you mean `collect`?)" in f for f in found), found


GOVERNED_BAD = """\
name: bad
version: "1"
input:
  tenant: {type: string}
steps:
  - id: close
    type: governed
    action: finance.close_period
    with: {tenant: "${input.tenant}"}
  - id: post
    type: governed
    action: finance.post_journal_entry
    for_each: "${input.tenant}"
    as: entry
    timeout_seconds: 5
    with: {tenant: "${entry.tenant}", nope: 1}
  - id: by_hand
    type: approval
    action: x
    request_summary: s
    payload: 1
    obligations: "${[]}"
    requested_by: a
    max_rounds: 3
  - id: approve
    type: approval
    guards: post
    request_summary: "${len(held)} ${approval.rationale}"
    revise:
      - {id: revise, type: fail, error: X, message: "${approval.rationale} ${len(held)}"}
    revised: "${held}"
  - id: lonely
    type: approval
    guards: post
    revise:
      - {id: revise2, type: fail, error: X, message: m}
"""


def test_a_governed_step_and_its_guarding_approval_are_checked() -> None:
    """`type: governed` and the approval rounds that guard it: each mistake at its line, naming
    the field (a governed step runs an action that asks policy itself; for_each needs a subject;
    revise belongs to an approval of a governed step and comes with revised)."""
    found = issues(GOVERNED_BAD)
    expected = [
        "p.yaml:8:13: governed step 'close': 'finance.close_period' is no action for a governed "
        "step: it does not ask policy itself",
        "p.yaml:10:5: step 'post' runs the sensitive action 'finance.post_journal_entry' and has "
        "no compensation",
        "p.yaml:13:5: governed step 'post' runs for_each and names no subject",
        "p.yaml:13:15: type mismatch: for_each expects array",
        "p.yaml:15:22: governed step 'post': timeout_seconds is not supported",
        "p.yaml:16:39: PostEntryInput has no field 'nope'",
        "p.yaml:17:5: steps.2.approval: Value error, max_rounds, revise and revised belong to an "
        "approval step that guards a governed step",
        "p.yaml:28:38: undefined variable 'approval' (known: input, steps, vars, workflow, held)",
        "p.yaml:32:5: steps.4.approval: Value error, revise and revised go together",
    ]
    for want in expected:
        assert any(f.startswith(want) for f in found), (want, found)
    assert not any("revise" in f and ":30:" in f for f in found)  # ${approval} in revise: known
