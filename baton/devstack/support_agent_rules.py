"""The stand-in model's rules for the support case's L2 researcher when it acts (plain rules, not a
language model; baton/devstack/model_server.py answers its turns with them).

One turn after another, from what the conversation holds so far:

1. look the customer up and their contract (two calls in one turn: both only read);
2. search the knowledge base with the case's subject and question;
3. when the customer names an amount charged in error ("... 80 USD ..."), propose a credit of
   it, once: a credit that policy denied or a support lead rejected is not asked for again;
4. draft the reply: the top passage's first sentence, plus what became of the credit;
5. finish with ``final_answer``: the same reply, citing the passages the search returned.

Must not: be imported by workflows; pretend to be anything but rules.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["claimed_amount", "research_case_calls"]

_AMOUNT = re.compile(
    r"(?:\$\s*(\d+(?:\.\d{1,2})?))|(?:(\d+(?:\.\d{1,2})?)\s*(?:USD|dollars?)\b)", re.I
)
_PASSAGE = re.compile(r"^\[([^\]\s]+)\]\s*(.*)$", re.M)


def claimed_amount(text: str) -> float | None:
    """The first amount in USD the customer names ("$80", "80 USD", "80.50 dollars")."""
    found = _AMOUNT.search(text)
    if found is None:
        return None
    return float(found.group(1) or found.group(2))


def research_case_calls(
    task: dict[str, Any], offered: set[str], made: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The next calls of the L2 researcher. ``made``: each earlier call's tool and the text of
    its result, in order. The last call returned is ``final_answer`` (its arguments fit
    workflows/agent_steps.py L2Research)."""
    called = {name for name, _ in made}
    customer = str(task.get("customer") or "")
    case_id = str(task.get("case_id") or "case")
    first = [
        {"name": tool, "arguments": {"customer": customer}}
        for tool in ("lookup_customer", "lookup_contract")
        if customer and tool in offered and tool not in called
    ]
    if first:
        return first
    question = f"{task.get('subject') or ''} {task.get('question') or ''}".strip()
    if "search_knowledge" in offered and "search_knowledge" not in called:
        return [{"name": "search_knowledge", "arguments": {"query": question[:500] or "help"}}]
    amount = claimed_amount(question)
    if amount is not None and customer and "propose_credit" in offered:
        if "propose_credit" not in called:
            reason = f"charged {amount:.2f} USD in error ({task.get('subject') or case_id})"
            arguments = {
                "customer": customer,
                "case_id": case_id,
                "amount_usd": amount,
                "currency": "USD",
                "reason": reason[:500],
            }
            return [{"name": "propose_credit", "arguments": arguments}]
    reply, cited = _reply(made, amount)
    if "draft_reply" in offered and "draft_reply" not in called:
        return [{"name": "draft_reply", "arguments": {"case_id": case_id, "text": reply}}]
    return [{"name": "final_answer", "arguments": {"answer": reply, "cited": cited}}]


def _reply(made: list[tuple[str, str]], amount: float | None) -> tuple[str, list[str]]:
    passages = [
        (pid, text)
        for name, result in made
        if name == "search_knowledge"
        for pid, text in _PASSAGE.findall(result)
    ]
    cited = [passages[0][0]] if passages else []
    said = passages[0][1].split(". ")[0].rstrip(".") + "." if passages else ""
    credits = [result for name, result in made if name == "propose_credit"]
    if credits and credits[-1].startswith("credit "):
        said += f" We have credited {amount:.2f} USD to your account."
    elif credits:  # denied by policy or rejected by a support lead: say so, do not insist
        said += (
            f" The credit of {amount:.2f} USD you asked for could not be made now "
            f"({credits[-1][:160]}); a support lead will follow up."
        )
    return (said.strip() or "We looked into your case and will follow up.")[:1000], cited
