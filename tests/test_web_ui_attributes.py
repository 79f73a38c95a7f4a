"""The search attributes issue 8 lists for the Web UI: each is one of Baton's attributes, the
local stack registers it (temporal-dev/stack.py), the test fixture registers it
(workflows/visibility.ALL), and the documentation page for the Web UI
(docs/operations/web-ui.md) documents it for production namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.settings import REPO_ROOT
from workflows import visibility
from workflows.contracts import SEARCH_ATTRIBUTES

#: What the issue asks for -> the attribute that carries it.
ISSUE_ATTRIBUTES = {
    "process": "BatonProcess",
    "tenant": "BatonTenant",
    "version": "BatonVersion",
    "risk": "BatonRisk",
    "approval state": "BatonApprovalState",
    "cost": "BatonCostUsd",
    "shadow": "BatonShadow",
    # a canary run is one whose BatonVersion is not "stable" (code canaries: Temporal's own
    # TemporalWorkerDeploymentVersion)
    "canary": "BatonVersion",
}
#: Added with per-call accounting of the model router (issue 6, branch router-support).
TOKENS = "BatonTokens"


def stack_argv() -> list[str]:
    from tests.devstack.test_stack import load_stack

    stack = load_stack()
    component = next(
        c for c in stack.components(Path("/tmp/baton-sa-check")) if c.name == "temporal"
    )
    return list(component.argv)


#: The page operators read to register and filter by the attributes (was a README section).
WEB_UI_PAGE = REPO_ROOT / "docs" / "operations" / "web-ui.md"


def web_ui_page() -> str:
    text = WEB_UI_PAGE.read_text()
    assert text.startswith("# Web UI: search attributes and list filters\n"), WEB_UI_PAGE
    return text


def check(name: str) -> None:
    assert name in SEARCH_ATTRIBUTES, f"{name} is not one of Baton's search attributes"
    assert name in {key.name for key in visibility.ALL}, (
        f"the test fixture does not register {name}"
    )
    argv = stack_argv()
    assert f"{name}={SEARCH_ATTRIBUTES[name]}" in argv, f"the local stack does not register {name}"
    section = web_ui_page()
    assert f"`{name}`" in section, f"{WEB_UI_PAGE} does not document {name}"


@pytest.mark.parametrize("what", sorted(ISSUE_ATTRIBUTES))
def test_issue_attribute_is_registered_and_documented(what: str) -> None:
    check(ISSUE_ATTRIBUTES[what])


def test_tokens_attribute_is_registered_and_documented() -> None:
    check(TOKENS)


def test_every_baton_attribute_is_documented_with_its_type() -> None:
    section = web_ui_page()
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"| `{name}` | {kind} |" in section, f"{WEB_UI_PAGE} row for {name} ({kind})"
