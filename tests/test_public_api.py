"""The public API of workflows/ and activities/ is declared (``__all__`` on every module) and
pinned in tests/public_api.json, so it cannot drift by accident: adding, renaming or removing a
public name is a deliberate change to that file (and to the docs that name it)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import activities
import workflows

#: module -> its pinned ``__all__`` (a data file: the lists are the pin, not code)
PUBLIC: dict[str, set[str]] = {
    module: set(names)
    for module, names in json.loads((Path(__file__).parent / "public_api.json").read_text()).items()
}


def _modules() -> list[str]:
    found = []
    for package in (workflows, activities):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.startswith("activities.migrations"):
                continue  # Alembic's scripts (env.py, versions/): run by Alembic, no API
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            # a package counts when its __init__ declares an API (workflows.contracts re-exports
            # the names of its modules); the others are only folders of modules
            if not info.ispkg or hasattr(importlib.import_module(info.name), "__all__"):
                found.append(info.name)
    return sorted(found)


def test_every_public_module_declares_its_api_and_is_pinned() -> None:
    assert _modules() == sorted(PUBLIC), "a module was added or removed: pin its __all__ here"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_the_declared_api_is_the_pinned_one_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{name} declares no __all__"
    assert len(declared) == len(set(declared)), f"{name}.__all__ names something twice"
    assert set(declared) == PUBLIC[name]
    missing = [n for n in declared if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what the module does not define: {missing}"


def test_every_failure_type_a_workflow_module_names_is_in_the_catalogue() -> None:
    """One catalogue of failure types (workflows/errors.py): the constants the contracts and
    the processes use are entries of it, and every entry says what it means."""
    from workflows import contracts, errors
    from workflows.contracts import auction as contracts_auction
    from workflows.contracts import support as contracts_support
    from workflows.customer_onboarding import PLAN_INVALID
    from workflows.dsl import interpreter
    from workflows.hr_onboarding import CONFLICTS_EXHAUSTED, NEW_HIRE_NOT_VERIFIED

    named = {
        contracts.KILL_SWITCH_ERROR,
        contracts.BUDGET_EXCEEDED,
        contracts_auction.NO_BIDS,
        contracts_auction.ALL_WINNERS_FAILED,
        contracts_support.NO_ELIGIBLE_MODEL,
        PLAN_INVALID,
        NEW_HIRE_NOT_VERIFIED,
        CONFLICTS_EXHAUSTED,
        interpreter.DEFINITION_ERROR,
        interpreter.INPUT_INVALID,
        interpreter.LOOP_LIMIT,
        interpreter.EVENT_TIMEOUT,
        interpreter.BRANCHES_FAILED,
    }
    assert named <= set(errors.FAILURE_TYPES)
    assert all(meaning.strip() for meaning in errors.FAILURE_TYPES.values())


def test_baton_exceptions_share_one_root() -> None:
    from activities.canary import CanaryError
    from activities.kill_switch import KillSwitchError
    from activities.redaction import RedactionError
    from workflows.blackboard import ConflictRetriesExhausted, StaleWrite
    from workflows.client import BatonClientError, ProcessAlreadyStarted
    from workflows.dsl.expressions import ExpressionError
    from workflows.dsl.validate import DefinitionInvalid
    from workflows.errors import BatonError
    from workflows.registry import UnknownProcess

    for cls in (
        CanaryError,
        KillSwitchError,
        RedactionError,
        ConflictRetriesExhausted,
        StaleWrite,
        BatonClientError,
        ProcessAlreadyStarted,
        ExpressionError,
        DefinitionInvalid,
        UnknownProcess,
    ):
        assert issubclass(cls, BatonError), cls
    # a bad definition is still a ValueError for callers that caught that before
    assert issubclass(DefinitionInvalid, ValueError)


def test_no_workflow_but_the_close_imports_a_process_activity_class() -> None:
    """Policy has its own activity (activities/policy_gate.py): the building blocks and the
    other processes do not import the finance close's activities to ask it."""
    root = Path(workflows.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "finance_close.py" and "FinanceActivities" in p.read_text()
    ]
    assert offenders == []
