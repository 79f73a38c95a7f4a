"""The stand-in model's rules for the acting L2 researcher (baton/devstack/support_agent_rules.py):
one turn after another from the conversation so far, as the support case's tests rely on."""

from __future__ import annotations

from typing import Any

import pytest

from baton.devstack.support_agent_rules import claimed_amount, research_case_calls

OFFERED = {
    "lookup_customer",
    "lookup_contract",
    "search_knowledge",
    "propose_credit",
    "draft_reply",
    "final_answer",
}
TASK = {
    "case_id": "C-1",
    "customer": "Globex GmbH",
    "subject": "Charged twice",
    "question": "I was charged twice: please credit the 80 USD back",
}
FOUND = "[KB-billing-refund#0] Refunds are issued within 5 days. Contact billing for more."


def names(calls: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in calls]


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("credit the 80 USD back", 80.0),
        ("I paid $49.50 twice", 49.5),
        ("refund 120 dollars", 120.0),
        ("Please refund invoice 4411", None),  # an invoice number is no amount
    ],
)
def test_only_an_amount_in_usd_the_customer_names_counts(text: str, amount: float | None) -> None:
    assert claimed_amount(text) == amount


def test_it_looks_up_searches_credits_drafts_and_answers_in_turn() -> None:
    made: list[tuple[str, str]] = []
    first = research_case_calls(TASK, OFFERED, made)
    assert names(first) == ["lookup_customer", "lookup_contract"]  # both read: one turn
    made += [("lookup_customer", "{}"), ("lookup_contract", "{}")]
    assert names(research_case_calls(TASK, OFFERED, made)) == ["search_knowledge"]
    made.append(("search_knowledge", FOUND))
    [credit] = research_case_calls(TASK, OFFERED, made)
    assert credit["arguments"] == {
        "customer": "Globex GmbH",
        "case_id": "C-1",
        "amount_usd": 80.0,
        "currency": "USD",
        "reason": "charged 80.00 USD in error (Charged twice)",
    }
    made.append(("propose_credit", "credit cr-1 of 80.00 USD proposed to Globex GmbH"))
    [draft] = research_case_calls(TASK, OFFERED, made)
    assert draft["name"] == "draft_reply"
    assert draft["arguments"]["text"] == (
        "Refunds are issued within 5 days. We have credited 80.00 USD to your account."
    )
    made.append(("draft_reply", "draft d-1 saved for C-1"))
    [final] = research_case_calls(TASK, OFFERED, made)
    assert final == {
        "name": "final_answer",
        "arguments": {"answer": draft["arguments"]["text"], "cited": ["KB-billing-refund#0"]},
    }


def test_a_refused_credit_is_not_asked_again_and_the_reply_says_so() -> None:
    refused = "sam rejected this call: refund the invoice instead"
    made = [
        ("lookup_customer", "{}"),
        ("lookup_contract", "{}"),
        ("search_knowledge", FOUND),
        ("propose_credit", refused),
    ]
    [draft] = research_case_calls(TASK, OFFERED, made)
    assert draft["name"] == "draft_reply"
    assert f"could not be made now ({refused})" in draft["arguments"]["text"]


def test_no_amount_no_credit() -> None:
    task = {**TASK, "question": "Please refund invoice 4411"}
    made = [("lookup_customer", "{}"), ("lookup_contract", "{}"), ("search_knowledge", FOUND)]
    assert names(research_case_calls(task, OFFERED, made)) == ["draft_reply"]
