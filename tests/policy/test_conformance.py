"""Rego semantics Baton relies on, case by case, on the embedded wrapper and on the REST path.

Each case names the query, the input, what a default OPA server answers (from OPA's policy
language and REST API documentation: a real OPA binary cannot run here) and what Baton's paths
answer. They are the same in every category but one: builtin errors. A default OPA server
evaluates with strict-builtin-errors off, so a failing builtin call is undefined and the rule
silently does not fire; the OPA binding Baton embeds always evaluates with strict builtin errors
(its bridge sets it and offers no switch), so Baton asks OPA servers for the same
(``strict-builtin-errors=true``) and every path fails the evaluation, which decide() turns into
a deny naming the error (fail closed). docs/policy-engine.md explains the choice.

Categories (those of OPA's own conformance suite that decide a verdict): undefined results,
builtin errors, conflicting outputs, ``every``, ``with``, ``else``, default rules, partial sets
and objects, type errors (compile time and run time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opa_client.opa_async import AsyncOpaClient

from activities.policy import (
    EVALUATION_FAILED,
    EmbeddedOpaEngine,
    OpaRestEngine,
    PolicyEvalError,
    PolicyLoadError,
    PolicyUndefined,
    RegorusEngine,
    decide,
)
from baton.devstack.opa_server import OpaCompatibleServer
from workflows.contracts import PolicyQuery

MODULE = """package conf

import rego.v1

# undefined
undefined_rule if input.missing == 1

undefined_ref := input.no.such.path

# builtin errors
builtin_error := to_number("not a number")

builtin_error_in_body if {
	to_number(input.s) > 0
}

divide_by_zero := 1 / input.zero

runtime_type_error := input.s + 1

# json.is_valid / yaml.is_valid of a non-string: false, not an error
json_valid_number := json.is_valid(input.n)

yaml_valid_number := yaml.is_valid(input.n)

json_valid_string := json.is_valid("{}")

# conflicting outputs
conflict := 1

conflict := 2 if input.n == 7

object_conflict[k] := v if {
	some k, v in {"a": 1}
}

object_conflict[k] := v if {
	some k, v in {"a": 2}
}

# every
every_true if every x in [1, 2, 3] {
	x > 0
}

every_empty if every x in [] {
	x > 100
}

every_false if every x in [1, -2] {
	x > 0
}

# with
with_input := v if {
	v := inner with input as {"x": 5}
}

inner := input.x

with_data := v if {
	v := data.settings.cap with data.settings.cap as 9
}

# else
grade := "high" if input.n > 10 else := "mid" if input.n > 5 else := "low"

# default rules
default defaulted := false

defaulted if input.never == true

default defaulted_obj := {"allow": false}

# partial sets and objects
colours contains c if some c in ["red", "blue", "red"]

no_colours contains c if some c in []

ages[name] := age if some name, age in {"ann": 30, "bob": 41}

no_ages[name] := age if some name, age in {}
"""

TYPE_ERROR_MODULE = 'package typed\n\nimport rego.v1\n\nbad := 1 + "a"\n'

INPUT = {"s": "abc", "n": 7, "zero": 0}

UNDEFINED, ERROR = "undefined", "error"

#: (rule, what a default OPA server answers, what every Baton path answers)
CASES: list[tuple[str, Any, Any]] = [
    ("undefined_rule", UNDEFINED, UNDEFINED),
    ("undefined_ref", UNDEFINED, UNDEFINED),
    # Builtin errors: undefined on a default OPA server; an evaluation error on Baton's paths.
    ("builtin_error", UNDEFINED, ERROR),
    ("builtin_error_in_body", UNDEFINED, ERROR),
    ("divide_by_zero", UNDEFINED, ERROR),
    ("runtime_type_error", UNDEFINED, ERROR),
    ("json_valid_number", False, False),
    ("yaml_valid_number", False, False),
    ("json_valid_string", True, True),
    # Conflicts are errors on OPA whatever the builtin-error mode (eval_conflict_error).
    ("conflict", ERROR, ERROR),
    ("object_conflict", ERROR, ERROR),
    ("every_true", True, True),
    ("every_empty", True, True),
    ("every_false", UNDEFINED, UNDEFINED),
    ("with_input", 5, 5),
    ("with_data", 9, 9),
    ("grade", "mid", "mid"),
    ("defaulted", False, False),
    ("defaulted_obj", {"allow": False}, {"allow": False}),
    # Sets come back as arrays (sorted by OPA); an empty partial set or object is defined.
    ("colours", ["blue", "red"], ["blue", "red"]),
    ("no_colours", [], []),
    ("ages", {"ann": 30, "bob": 41}, {"ann": 30, "bob": 41}),
    ("no_ages", {}, {}),
]


def outcome(call: Any) -> Any:
    try:
        return call()
    except PolicyUndefined:
        return UNDEFINED
    except PolicyEvalError:
        return ERROR


async def outcome_async(engine: OpaRestEngine, path: str) -> Any:
    try:
        value, _ = await engine.evaluate(path, INPUT)
        return value
    except PolicyUndefined:
        return UNDEFINED
    except PolicyEvalError:
        return ERROR


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conformance")
    (root / "conf.rego").write_text(MODULE)
    (root / "string_allow.rego").write_text(
        'package conf_string_allow\n\ndecision := {"allow": "true"}\n'
    )
    return root


#: policy writes to the local OPA server need its bearer token
WRITE_TOKEN = "conformance-write-token"


@pytest.fixture(scope="module")
async def rest(policy_dir: Path) -> AsyncIterator[tuple[OpaRestEngine, int]]:
    server = OpaCompatibleServer(policy_dir, write_token=WRITE_TOKEN)
    port = server.start("127.0.0.1", 0)
    engine = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    try:
        yield engine, port
    finally:
        await engine.aclose()
        server.stop()


def test_cases_differ_from_a_default_opa_server_only_on_builtin_errors() -> None:
    differing = {rule for rule, default_opa, baton in CASES if default_opa != baton}
    assert differing == {
        "builtin_error",
        "builtin_error_in_body",
        "divide_by_zero",
        "runtime_type_error",
    }


@pytest.mark.parametrize(("rule", "default_opa", "baton"), CASES, ids=[c[0] for c in CASES])
async def test_embedded_and_rest_give_the_documented_answer(
    policy_dir: Path, rest: tuple[OpaRestEngine, int], rule: str, default_opa: Any, baton: Any
) -> None:
    embedded = EmbeddedOpaEngine(policy_dir)
    try:
        got = outcome(lambda: embedded.evaluate_sync(f"conf/{rule}", INPUT)[0])
    finally:
        embedded.close()
    assert got == baton
    assert await outcome_async(rest[0], f"conf/{rule}") == baton


@pytest.mark.parametrize(("rule", "default_opa", "baton"), CASES, ids=[c[0] for c in CASES])
def test_regorus_agrees(policy_dir: Path, rule: str, default_opa: Any, baton: Any) -> None:
    # The cross-check engine too, json.is_valid/yaml.is_valid of a non-string included
    # (regorus alone raises there; RegorusEngine gives it OPA's answer, false).
    regorus = RegorusEngine(policy_dir)
    assert outcome(lambda: regorus.evaluate_sync(f"conf/{rule}", INPUT)[0]) == baton


async def test_decide_fails_closed_on_every_path(
    policy_dir: Path, rest: tuple[OpaRestEngine, int]
) -> None:
    embedded = EmbeddedOpaEngine(policy_dir)
    try:
        for engine in (embedded, rest[0], RegorusEngine(policy_dir)):
            for policy, reason in (
                ("conf_string_allow", "policy 'allow' is not a boolean: 'true'"),
                ("conf_nothing_here", "policy returned no decision (undefined)"),
            ):
                query = PolicyQuery(policy=policy, input=INPUT, subject="conf")
                decision = await decide(engine, query, "conf")
                assert (decision.verdict, decision.reasons) == ("deny", [reason]), engine
    finally:
        embedded.close()


async def test_builtin_errors_deny_naming_the_error_on_every_path(
    tmp_path: Path, rest: tuple[OpaRestEngine, int]
) -> None:
    (tmp_path / "p.rego").write_text(
        "package erring\n\nimport rego.v1\n\n"
        'decision := {"allow": true, "deny": [m | m := sprintf("%d", [to_number(input.s)])]}\n'
    )
    server = OpaCompatibleServer(tmp_path)
    port = server.start("127.0.0.1", 0)
    remote = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    embedded = EmbeddedOpaEngine(tmp_path)
    try:
        query = PolicyQuery(policy="erring", input={"s": "x"}, subject="c")
        for engine in (embedded, remote, RegorusEngine(tmp_path)):
            decision = await decide(engine, query, "conf-err")
            assert decision.verdict == "deny"
            assert decision.reasons[0].startswith(EVALUATION_FAILED), decision.reasons
            # Not "engine unavailable": waiting for the engine would not change the answer.
            assert "unavailable" not in decision.reasons[0]
    finally:
        await remote.aclose()
        embedded.close()
        server.stop()


async def test_type_errors_are_refused_at_load_on_every_path(
    tmp_path: Path, rest: tuple[OpaRestEngine, int]
) -> None:
    (tmp_path / "typed.rego").write_text(TYPE_ERROR_MODULE)
    with pytest.raises(PolicyLoadError, match="rego_type_error"):
        EmbeddedOpaEngine(tmp_path).evaluate_sync("typed/bad", None)
    async with AsyncOpaClient(
        host="127.0.0.1", port=rest[1], retries=0, token=WRITE_TOKEN
    ) as client:
        with pytest.raises(Exception, match="compiling module.*plus: invalid argument"):
            await client.update_policy_from_string(TYPE_ERROR_MODULE, "typed", rego_compat=False)
