"""The documentation's process table (docs/processes.md, "Starting processes from any
language") is what a service team in another language copies: each row's workflow type, task
queue, input JSON and business key must be what Baton's worker and client really use. This test
reads the table from the page itself, so the page cannot drift from the code."""

from __future__ import annotations

import json
import re
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from temporalio import workflow

from baton.settings import REPO_ROOT, Settings
from worker import WORKFLOWS
from workflows.contracts import DEFAULT_TASK_QUEUE
from workflows.dsl.model import ProcessRunInput
from workflows.dsl.validate import validate_text
from workflows.support import case_workflow_id
from workflows.support_client import queue_workflow_id

PAGE = REPO_ROOT / "docs" / "processes.md"
SECTION = "## Starting processes from any language"
COLUMNS = ["process", "workflow type", "task queue", "input model", "minimal input JSON"]
PROCESSES = {
    "finance close",
    "HR onboarding",
    "customer onboarding",
    "support queue",
    "support case",
    "document review",
    "YAML process",
}


def table_rows() -> dict[str, list[str]]:
    """The table's rows by process name, each cell's first code span (or its text)."""
    text = PAGE.read_text()
    assert SECTION in text, f"{PAGE} lost its section {SECTION!r}"
    lines = text[text.index(SECTION) :].splitlines()
    section = next((i for i, line in enumerate(lines[1:], 1) if line.startswith("## ")), None)
    table = [line for line in lines[1:section] if line.startswith("|")]  # this section's only
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[: len(COLUMNS)] == COLUMNS, header
    rows: dict[str, list[str]] = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        code = [re.match(r"`([^`]*)`", c) for c in cells]
        rows[cells[0]] = [m.group(1) if m else c for m, c in zip(code, cells, strict=True)]
    return rows


ROWS = table_rows()


def registered(type_name: str) -> type:
    for cls in WORKFLOWS:
        defn = workflow._Definition.must_from_class(cls)
        if defn.name == type_name:
            return cls
    raise AssertionError(f"no workflow type {type_name!r} is registered by worker.py")


def business_key(inp: BaseModel) -> str:
    """The workflow id Baton's clients start this input under."""
    workflow_id = getattr(inp, "workflow_id", None)
    if callable(workflow_id):  # finance close, HR and customer onboarding, document review
        return str(workflow_id())
    case = getattr(inp, "case", None)
    if case is not None:  # SupportClient.start_case / the coordinator's child
        return case_workflow_id(case)
    return queue_workflow_id(inp.tenant, inp.name)  # type: ignore[attr-defined]


def test_the_table_lists_every_business_process() -> None:
    assert set(ROWS) == PROCESSES


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_each_row_is_what_the_worker_and_client_use(process: str) -> None:
    _, type_name, queue, model_name, example, key = ROWS[process][:6]

    cls = registered(type_name)
    model: Any = typing.get_type_hints(cls.run)["inp"]
    assert model.__name__ == model_name, f"{type_name}'s input is {model.__name__}"

    assert queue == DEFAULT_TASK_QUEUE == Settings().task_queue

    inp = model.model_validate(json.loads(example))  # raises, naming the field, if it drifted

    if isinstance(inp, ProcessRunInput):
        assert re.fullmatch(rf"{inp.definition.name}-[0-9a-f]{{12}}", key), key
        definition = yaml.safe_dump(inp.definition.model_dump(exclude_defaults=True))
        parsed, issues = validate_text(definition)
        assert parsed is not None and issues == [], issues
    else:
        assert business_key(inp) == key


def test_a_wrong_example_would_fail() -> None:
    """The check above can fail: a row missing a required field is refused, naming it."""
    _, _, _, _, example, _ = ROWS["finance close"][:6]
    data = json.loads(example)
    del data["period"]
    model: Any = typing.get_type_hints(registered("FinanceClose").run)["inp"]
    with pytest.raises(ValueError, match="period"):
        model.model_validate(data)
