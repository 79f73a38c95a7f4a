"""Tier 0 of the model router: deterministic rules that answer a task for free when they can.

A tier-0 rule set looks at the agent input and either answers with a confidence or abstains
(``None``). It answers only on unambiguous evidence (high precision, partial coverage); anything
else goes to a model. The router (activities/router.py) accepts a tier-0 answer only at or above
the task class's ``min_confidence``. bench/router_bench.py measures accuracy and coverage.

Must not: do I/O, call a model, or be imported by workflows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Phrases that name a support category outright. Each must be specific enough that a ticket
#: containing it almost always belongs to that category.
_STRONG_SIGNALS: dict[str, tuple[str, ...]] = {
    "billing": (
        r"\brefund\b",
        r"\binvoice\b",
        r"\bcharged twice\b",
        r"\bdouble[- ]charged\b",
        r"\bbilling\b",
        r"\bVAT\b",
        r"\breceipt\b",
    ),
    "technical": (
        r"\berror code\b",
        r"\bcrash(es|ed|ing)?\b",
        r"\bstack ?trace\b",
        r"\bAPI\b",
        r"\b50[0-4]\b",
        r"\bbug\b",
        r"\btimeout\b",
    ),
    "account": (
        r"\bpassword\b",
        r"\b2fa\b",
        r"\btwo[- ]factor\b",
        r"\blocked out\b",
        r"\busername\b",
        r"\bemail address on (my|the) account\b",
    ),
    "shipping": (
        r"\btracking number\b",
        r"\bparcel\b",
        r"\bcourier\b",
        r"\bdelivery\b",
        r"\bshipment\b",
    ),
    "cancellation": (
        r"\bcancel (my|our|the) (subscription|plan|account|contract)\b",
        r"\bunsubscribe\b",
        r"\bterminate (my|our|the) (subscription|plan|contract)\b",
        r"\bclose (my|our) account\b",
    ),
}
_COMPILED = {
    category: [re.compile(p, re.I) for p in patterns]
    for category, patterns in _STRONG_SIGNALS.items()
}


@dataclass(frozen=True)
class Tier0Answer:
    """A rule answer: the agent's output as a JSON-able dict plus the confidence behind it."""

    output: dict[str, Any]
    confidence: float
    rule: str


def support_triage_rules(payload: dict[str, Any]) -> Tier0Answer | None:
    """Classify a ticket when exactly one category has strong signals; abstain otherwise.

    Confidence grows with the number of distinct signals (1: 0.8, 2: 0.9, 3+: 0.95)."""
    text = f"{payload.get('subject', '')}\n{payload.get('body', '')}"
    hits = {
        category: [p.pattern for p in patterns if p.search(text)]
        for category, patterns in _COMPILED.items()
    }
    matched = {c: h for c, h in hits.items() if h}
    if len(matched) != 1:
        return None  # nothing specific, or signals of several categories: a model decides
    ((category, found),) = matched.items()
    confidence = {1: 0.8, 2: 0.9}.get(len(found), 0.95)
    return Tier0Answer(
        output={"category": category, "confidence": confidence},
        confidence=confidence,
        rule=f"{category}: {', '.join(found)}",
    )


#: Tier-0 rule sets by the name a task class gives in the catalogue (``tier0``).
TIER0_RULES: dict[str, Callable[[dict[str, Any]], Tier0Answer | None]] = {
    "support_triage_rules": support_triage_rules,
}

__all__ = [
    "TIER0_RULES",
    "Tier0Answer",
    "support_triage_rules",
]
