"""What ``baton validate`` checks of a governed step (``type: governed``) and of the approval
step that guards it (``guards:`` on it): the action is a connector action that asks policy
itself (its output carries the ``decision``), its ``with:`` fits the action's input and its
``compensation:`` the undo's, an item's ``subject`` is named when it runs ``for_each``, and
the approval's ``revise`` steps come with ``revised``. The interpreter (workflows/dsl/
interpreter.py) compiles both to the GovernedStep and ApprovalRound of workflows/governed.py.

Used by workflows/dsl/validate.py (``check`` with its checker); no I/O.
"""

from __future__ import annotations

from typing import Any

from workflows.dsl import catalog
from workflows.dsl.model import ApprovalStep, GovernedActionStep
from workflows.dsl.names import nearest

__all__ = ["check", "check_rounds", "decided_actions", "guard_vars", "item_scope"]


def decided_actions() -> dict[str, catalog.Action]:
    """The connector actions that ask policy in their own transaction (a ``decision`` in
    their output): what a governed step may run."""
    return {
        name: a
        for name, a in sorted(catalog.CONNECTORS.items())
        if "decision" in getattr(a.output, "model_fields", {}) and not a.governed
    }


def item_scope(checker: Any, step: GovernedActionStep, info: Any, scope: dict[str, Any]) -> Any:
    """The variables a governed step's fields see: the item (``as``) with ``for_each``."""
    if step.for_each is None:
        return scope
    return {**scope, step.as_: checker.item_type(step.for_each, info)}


def guard_vars(checker: Any, guards: str | None, approval: Any = None) -> dict[str, Any]:
    """The variables of an approval that guards a governed step: ``held`` (the items waiting
    in the round) and, in its revise steps, ``approval`` (the round's outcome, its schema)."""
    target = checker.infos.get(guards or "")
    if target is None or not isinstance(target.step, GovernedActionStep):
        return {}
    item = checker.item_type(target.step.for_each, target)
    held = ({"type": "array", "items": item[0]}, item[1]) if item else ({"type": "array"}, {})
    return {"held": held} if approval is None else {"held": held, "approval": approval}


def check(checker: Any, info: Any, scope: dict[str, Any]) -> None:
    """Report what is wrong with governed step ``info.step`` (``scope``: with its item)."""
    step: GovernedActionStep = info.step
    p, frames = info.path, info.frames
    decided = decided_actions()
    action = decided.get(step.action)
    if action is None:
        other = catalog.CONNECTORS.get(step.action)
        why = (
            "it does not ask policy itself (no decision in its output)"
            if other is not None and not other.governed
            else "an extension's governed action runs as `type: connector`"
            if other is not None
            else f"unknown action{nearest(step.action, decided)}"
        )
        checker.error(
            (*p, "action"),
            f"governed step {step.id!r}: {step.action!r} is no action for a governed step: "
            f"{why} (governed steps run: {', '.join(decided) or 'none'})",
        )
    else:
        checker.check_call(action.input, step.with_, (*p, "with"), info, scope)
        if action.sensitive and step.compensation is None:
            checker.error(
                p,
                f"step {step.id!r} runs the sensitive action {step.action!r} and has no "
                "compensation: add `compensation:` with the action that undoes it",
                key="id",
            )
    if step.for_each is not None and not step.subject:
        checker.error(
            p,
            f"governed step {step.id!r} runs for_each and names no subject: add `subject:` "
            "(what an item's decision is kept under, e.g. its id)",
            key="for_each",
        )
    checker.refuse_presets(
        step,
        p,
        lambda name: (
            f"governed step {step.id!r}: {name} is not supported (it runs with the "
            "connector preset, workflows/presets.py)"
        ),
    )
    outer = checker.loop_vars(frames)
    checker.check_value(step.for_each, (*p, "for_each"), frames, outer, info, "array")
    checker.check_value(step.subject, (*p, "subject"), frames, scope, info, "string")


def check_rounds(checker: Any, step: ApprovalStep, p: Any) -> None:
    """An approval's ``max_rounds`` / ``revise`` need a governed step to guard."""
    target = checker.infos.get(step.guards or "")
    if target is None or isinstance(target.step, GovernedActionStep):
        return
    for name in ("max_rounds", "revise"):
        if getattr(step, name):
            checker.error(
                (*p, name),
                f"{name} belongs to an approval that guards a governed step (type: governed); "
                f"{step.guards!r} is an extension's action, approved once",
            )
