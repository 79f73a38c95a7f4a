"""Answer checks: is a schema-valid answer also a complete and sensible one?

A model can answer JSON that fits the schema and still says nothing (``{"entries": []}`` for a
month with unexplained bank lines), invents ids, or writes ``"ACME, 2014-09"`` as a close memo.
Each agent has one check here, a function of the agent's input returning the answer's check:
a list of problems, each naming what is missing or wrong ([] = accepted). The agent call
(activities/agents.py, activities/router.py) feeds the problems back to the model for ONE repair
turn, then asks the stronger model, then fails the step with a non-retryable error naming them;
every refused answer's audit row carries them as its note. Nothing is posted on a refused answer.

What the checks do not decide: which accounts may be posted to and which amounts need approval
(policy does, with an audited decision), and whether a text is well written.

Must not: do I/O, or change an answer (a check accepts or refuses; it never repairs).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from workflows.contracts import (
    BoardAgentInput,
    MemoInput,
    ProposeAdjustmentsInput,
    ReviseAdjustmentsInput,
)

Check = Callable[[Any], list[str]]

#: How many unknown ids a problem lists before it says "and N more".
SHOWN = 8


def _ids(values: Iterable[str]) -> str:
    items = sorted(set(values))
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _repeated(what: str, ids: list[str]) -> list[str]:
    """The problem "<what> used more than once: <the ids>" when an id repeats, else none."""
    repeated = sorted(v for v, n in Counter(ids).items() if n > 1)
    return [f"{what} used more than once: {_ids(repeated)}"] if repeated else []


def _unknown(what: str, named: Iterable[str], known: set[str], known_as: str) -> list[str]:
    """The problem "<what>: <the ids> (the <known_as> are: <the known ids>)" when ``named``
    has ids that are not ``known``, else none."""
    unknown = set(named) - known
    if not unknown:
        return []
    return [f"{what}: {_ids(unknown)} (the {known_as} are: {_ids(known) or 'none'})"]


def _empty(what: str, text: str) -> list[str]:
    """The problem "the <what> is empty" when ``text`` is empty or blank, else none."""
    return [] if text.strip() else [f"the {what} is empty"]


def _amount(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return None


# -- finance close ---------------------------------------------------------------------------


def reconciler(inp: ProposeAdjustmentsInput) -> Check:
    """Every unmatched bank line, unmatched ledger entry and duplicate of the input is cited by
    an entry or listed under ``no_entry_needed`` with a reason; every cited id is one of them;
    entry ids are unique; amounts are non-zero decimals."""
    bank = {b.line_id for b in inp.unmatched_bank}
    ledger = {e.entry_id for e in inp.unmatched_ledger}
    duplicates = set(inp.duplicate_ledger_ids)
    known = bank | ledger | duplicates | {e.entry_id for e in inp.duplicate_ledger}

    def check(answer: Any) -> list[str]:
        problems: list[str] = []
        cited = {s for e in answer.entries for s in e.source_ids}
        waived = {n.source_id for n in answer.no_entry_needed}
        addressed = cited | waived
        for ids, what in (
            (bank, "unmatched bank line(s)"),
            (ledger - duplicates, "unmatched ledger entr(y/ies)"),
            (duplicates, "duplicate ledger entr(y/ies)"),
        ):
            missing = ids - addressed
            if missing:
                problems.append(
                    f"{len(missing)} {what} not addressed (cite each in an entry's source_ids "
                    f"or list it under no_entry_needed with a reason): {_ids(missing)}"
                )
        unknown = addressed - known
        if unknown:
            problems.append(f"ids that are not in the input: {_ids(unknown)}")
        problems += _repeated("entry ids", [e.entry_id for e in answer.entries])
        for e in answer.entries:
            if not e.source_ids:
                problems.append(f"entry {e.entry_id} cites no source id")
            amount = _amount(e.amount)
            if amount is None or amount == 0:
                problems.append(f"entry {e.entry_id}: amount {e.amount!r} is not a non-zero amount")
            if not e.rationale.strip():
                problems.append(f"entry {e.entry_id} gives no rationale")
        return problems + [
            f"no_entry_needed {n.source_id} gives no reason"
            for n in answer.no_entry_needed
            if not n.reason.strip()
        ]

    return check


def reviser(inp: ReviseAdjustmentsInput) -> Check:
    """At least one entry (dropping all is a rejection, an approver's call); unique entry ids;
    sources among the entries sent back; non-zero decimal amounts."""
    sources = {s for e in inp.entries for s in e.source_ids}

    def check(answer: Any) -> list[str]:
        problems: list[str] = []
        if not answer.entries:
            problems.append(
                "the revision has no entries; dropping every entry is a rejection, which only "
                "an approver can decide"
            )
        problems += _repeated("entry ids", [e.entry_id for e in answer.entries])
        unknown = {s for e in answer.entries for s in e.source_ids} - sources
        if unknown:
            problems.append(f"source ids that none of the entries sent back cites: {_ids(unknown)}")
        for e in answer.entries:
            amount = _amount(e.amount)
            if amount is None or amount == 0:
                problems.append(f"entry {e.entry_id}: amount {e.amount!r} is not a non-zero amount")
        return problems

    return check


def compliance(entry_ids: Iterable[str]) -> Check:
    """Findings name entries under review; the summary is not empty."""
    known = set(entry_ids)

    def check(answer: Any) -> list[str]:
        named = [f.entry_id for f in answer.findings]
        problems = _unknown(
            "findings name entry ids that are not under review", named, known, "entries"
        )
        return problems + _empty("summary", answer.summary)

    return check


def _states(text: str, number: int) -> bool:
    """Whether ``text`` states ``number`` (as digits; 0 also as 'no', 'none' or 'zero')."""
    if re.search(rf"(?<![\d.,-]){number}(?![\d]|[.,]\d)", text):
        return True
    return number == 0 and re.search(r"\b(no|none|zero|nothing)\b", text, re.I) is not None


def memo(inp: MemoInput) -> Check:
    """The memo states the counts it was given: bank lines matched, bank lines and ledger
    entries left unmatched, and adjusting entries (so "ACME, 2014-09" is refused)."""
    counts = {
        "bank lines matched": inp.matched,
        "unmatched bank lines": inp.unmatched_bank,
        "unmatched ledger entries": inp.unmatched_ledger,
        "adjusting entries": len(inp.entries),
    }

    def check(answer: Any) -> list[str]:
        missing = [f"{what} ({n})" for what, n in counts.items() if not _states(answer.memo, n)]
        if missing:
            return [f"the memo does not state these counts of its input: {', '.join(missing)}"]
        return []

    return check


# -- HR onboarding ---------------------------------------------------------------------------


def board(inp: BoardAgentInput, own_key: str, allowed: frozenset[str]) -> Check:
    """The agent writes its own key with at least one item, writes only keys it may, gives a
    reason per write, and a checklist write keeps every item already there."""
    slot = inp.board.get("checklist")
    before = [str(i) for i in slot.value] if slot is not None else []

    def check(answer: Any) -> list[str]:
        problems: list[str] = []
        keys = [w.key for w in answer.writes]
        for key in sorted(set(keys) - allowed):
            problems.append(f"may write only {sorted(allowed)}, not {key!r}")
        own = [w for w in answer.writes if w.key == own_key]
        if not own or not any(i.strip() for w in own for i in w.items):
            problems.append(f"key {own_key!r} is not written (at least one item)")
        for w in answer.writes:
            if not w.reason.strip():
                problems.append(f"the write to {w.key!r} gives no reason")
            if w.key == "checklist":
                dropped = [i for i in before if i not in w.items]
                if dropped:
                    problems.append(f"the checklist write drops items already there: {dropped}")
        if len(keys) != len(set(keys)):
            problems.append(f"a key is written more than once: {keys}")
        return problems

    return check


# -- customer onboarding ---------------------------------------------------------------------


def customer_plan(requested_discount_pct: float) -> Check:
    """An intro email and an onboarding sequence step; a discount check exactly when a discount
    was requested; unique step ids."""

    def check(answer: Any) -> list[str]:
        problems: list[str] = []
        kinds = [s.kind for s in answer.steps]
        for needed in ("intro_email", "onboarding_sequence"):
            if needed not in kinds:
                problems.append(f"the plan has no {needed} step")
        if requested_discount_pct > 0 and "discount_check" not in kinds:
            problems.append(
                f"a {requested_discount_pct}% discount was requested but the plan has no "
                "discount_check step"
            )
        if requested_discount_pct <= 0 and "discount_check" in kinds:
            problems.append("the plan has a discount_check step but no discount was requested")
        problems += _repeated("step ids", [s.step_id for s in answer.steps])
        return problems + [
            f"step {s.step_id} has no instructions"
            for s in answer.steps
            if not s.instructions.strip()
        ]

    return check


def intro_email(language: str) -> Check:
    """A subject and a body, in the customer's language."""

    def check(answer: Any) -> list[str]:
        problems = _empty("subject", answer.subject)
        if len(answer.body.strip()) < 20:
            problems.append("the body is empty or too short to be an introduction email")
        if answer.language.strip().lower() != language.lower():
            problems.append(f"language is {answer.language!r}; the customer's is {language!r}")
        return problems

    return check


def discount(requested_pct: float) -> Check:
    """The recommendation is between 0 and the requested discount; eligible iff it is > 0."""

    def check(answer: Any) -> list[str]:
        problems = []
        if not 0 <= answer.recommended_pct <= max(requested_pct, 0):
            problems.append(
                f"recommended_pct {answer.recommended_pct} is outside 0..{requested_pct} (the "
                "discount requested)"
            )
        if answer.eligible != (answer.recommended_pct > 0):
            problems.append("eligible must be true exactly when recommended_pct is above 0")
        return problems + _empty("rationale", answer.rationale)

    return check


def sequence(answer: Any) -> list[str]:
    """At least one task, each named, due within a year, with an owner."""
    problems = []
    if not answer.tasks:
        problems.append("the sequence has no tasks")
    for i, t in enumerate(answer.tasks):
        if not t.name.strip() or not t.owner_role.strip():
            problems.append(f"task {i} needs a name and an owner_role")
        if not 0 <= t.due_in_days <= 365:
            problems.append(f"task {t.name!r}: due_in_days {t.due_in_days} is outside 0..365")
    return problems


# -- support ---------------------------------------------------------------------------------


def research(passage_ids: Iterable[str]) -> Check:
    """Citations name passages of the input; an answer is given."""
    known = set(passage_ids)

    def check(answer: Any) -> list[str]:
        problems = _unknown(
            "cited passage ids that are not in the input", answer.cited, known, "passages"
        )
        return problems + _empty("answer", answer.answer)

    return check


def agent_resolution(passage_ids: Iterable[str]) -> Check:
    """An agent that acted (workflows/agent_steps.py CaseResolution): citations name passages
    its own tool calls returned (search_knowledge), and an answer is given."""
    return research(passage_ids)


def summary(answer: Any) -> list[str]:
    return _empty("summary", answer.summary)


def ticket(answer: Any) -> list[str]:
    return _empty("reply to the customer", answer.reply)


# -- auction ---------------------------------------------------------------------------------


def bid(answer: Any) -> list[str]:
    problems = _empty("reason", answer.reason)
    if answer.bid and answer.expected_completion_tokens <= 0:
        problems.append("a bid must expect at least one completion token")
    return problems


def review(answer: Any) -> list[str]:
    """A flag names at least one finding; a summary is given."""
    problems = []
    if answer.verdict == "flag" and not answer.findings:
        problems.append("verdict 'flag' needs at least one finding naming the risky clause")
    return problems + _empty("summary", answer.summary)


__all__ = [
    "Check",
    "SHOWN",
    "agent_resolution",
    "bid",
    "board",
    "compliance",
    "customer_plan",
    "discount",
    "intro_email",
    "memo",
    "reconciler",
    "research",
    "review",
    "reviser",
    "sequence",
    "summary",
    "ticket",
]
