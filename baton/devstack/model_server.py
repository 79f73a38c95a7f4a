"""Local OpenAI-compatible model server: deterministic rules, NOT a language model.

Owns: the agent rules (``respond``) and the wire format of ``POST /v1/chat/completions``,
``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /health``, exactly as the ``openai`` SDK
expects them, so the demo and the tests run offline through the very same code path as a hosted
model. As its model name ``baton-rules-not-an-llm`` says, every chat answer is computed by plain
rules from the agent's input, and the same input always gives the same answer. Embeddings are the
exception: they come from a real model, all-MiniLM-L6-v2 (baton/devstack/embeddings.py), loaded
on the first embeddings request.

Agent protocol: ``messages = [system, user]``; the system message's first line is
``agent: <name>`` and the user message is the agent's input as a JSON document. The answer is a
JSON document (the assistant message's ``content``) that fits the agent's response schema.

Run: ``python -m baton.devstack.model_server --port 8765 --host 127.0.0.1``.

Must not: be imported by workflows; pretend to be anything but rules.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from baton.devstack.customer_rules import AGENTS as CUSTOMER_AGENTS
from baton.devstack.embeddings import (
    EMBEDDING_DIMENSIONS,
    EMBEDDING_MODEL_ALIASES,
    EMBEDDING_MODEL_NAME,
    MAX_INPUT_ITEMS,
    EmbeddingsUnavailable,
    shared_embedder,
)
from baton.devstack.jsonhttp import BackgroundHTTPServer, JsonRequestHandler, server_arguments
from baton.devstack.support_agent_rules import research_case_calls
from baton.settings import DEFAULT_MODEL_PORT, LOCAL_MODEL_NAME

SUSPENSE = "6900-suspense"
BANK_FEES = "6100-bank-fees"
INTEREST_INCOME = "7100-interest-income"
RECEIVABLES = "1200-accounts-receivable"
LARGE_AMOUNT = Decimal("10000")
CENT = Decimal("0.01")

# Checked in this order: "chargeback" contains "charge", so refunds must win over fees.
_MEMO_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"refund|chargeback", re.I), RECEIVABLES, "a refund or chargeback"),
    (re.compile(r"\bfees?\b|\bcharges?\b", re.I), BANK_FEES, "a bank fee or charge"),
    (re.compile(r"interest", re.I), INTEREST_INCOME, "interest"),
]


class AgentInputError(ValueError):
    """The request cannot be answered: unknown agent or an input that is not what it expects."""


# -- the rules --------------------------------------------------------------------------------


def respond(agent: str, payload: dict[str, Any], model: str = LOCAL_MODEL_NAME) -> dict[str, Any]:
    """The answer of ``agent`` to ``payload``, as the JSON object the agent's schema describes."""
    if agent in _MODEL_AGENTS:
        if not isinstance(payload, dict):
            raise AgentInputError(f"{agent}: the user message must be a JSON object")
        return _MODEL_AGENTS[agent](payload, model)
    rules = _AGENTS.get(agent) or _extension_rules(agent)
    if rules is None:
        known = ", ".join(sorted([*_AGENTS, *_MODEL_AGENTS]))
        raise AgentInputError(f"unknown agent {agent!r}; this server knows: {known}")
    if not isinstance(payload, dict):
        raise AgentInputError(f"{agent}: the user message must be a JSON object")
    return rules(payload)


def _extension_rules(role: str) -> Any:
    """The stand-in answer of an installed extension's agent (baton/extensions.py), if it
    declares one."""
    from baton import extensions

    for spec in extensions.load().agents.values():
        if spec.role == role and spec.stand_in is not None:
            return spec.stand_in
    return None


def _reconcile(payload: dict[str, Any]) -> dict[str, Any]:
    bank = _objects(payload, "unmatched_bank", "reconciler")
    ledger = _objects(payload, "unmatched_ledger", "reconciler")
    duplicate_ids = [str(i) for i in _items(payload, "duplicate_ledger_ids", "reconciler")]
    # The duplicate copies may come inside unmatched_ledger or, with their details, apart.
    extra = []
    if "duplicate_ledger" in payload:
        extra = _objects(payload, "duplicate_ledger", "reconciler")
    by_id = {str(e.get("entry_id")): e for e in [*extra, *ledger]}
    entries: list[dict[str, Any]] = []

    for line in bank:
        line_id = _text(line, "line_id")
        amount = _money(line, "amount")
        memo = str(line.get("memo", ""))
        account, why = SUSPENSE, "nothing in the memo explains it"
        for pattern, rule_account, meaning in _MEMO_RULES:
            if pattern.search(memo):
                account, why = rule_account, f"the memo {memo!r} shows {meaning}"
                break
        parked = " and is parked there until someone explains it" if account == SUSPENSE else ""
        entries.append(
            _entry(
                f"ADJ-{line_id}",
                account,
                amount,
                [line_id],
                f"Bank line {line_id} of {_fmt(amount)} (reference "
                f"{line.get('reference', '')!r}) has no ledger entry; {why}, so it is booked "
                f"to {account}{parked}.",
            )
        )

    duplicates = set(duplicate_ids)
    for entry_id in duplicate_ids:
        entry = by_id.get(entry_id)
        if entry is None:
            raise AgentInputError(
                f"reconciler: duplicate ledger entry {entry_id} is listed in duplicate_ledger_ids "
                "but neither unmatched_ledger nor duplicate_ledger gives its account and amount"
            )
        amount = _money(entry, "amount")
        account = _text(entry, "account")
        entries.append(
            _entry(
                f"ADJ-DUP-{entry_id}",
                account,
                -amount,
                [entry_id],
                f"Ledger entry {entry_id} ({_fmt(amount)} on {account}, reference "
                f"{entry.get('reference', '')!r}) was booked twice; this reverses the duplicate "
                f"with {_fmt(-amount)}.",
            )
        )

    for entry in ledger:
        entry_id = _text(entry, "entry_id")
        if entry_id in duplicates:
            continue
        amount = _money(entry, "amount")
        entries.append(
            _entry(
                f"ADJ-{entry_id}",
                SUSPENSE,
                -amount,
                [entry_id],
                f"Ledger entry {entry_id} ({_fmt(amount)} on {entry.get('account', '?')}, "
                f"reference {entry.get('reference', '')!r}) matches no bank line, e.g. a mis-keyed "
                f"amount; this moves {_fmt(-amount)} to {SUSPENSE} until it is corrected.",
            )
        )

    entries.sort(key=lambda e: e["entry_id"])
    # every item above got an entry: nothing is waived
    return {"entries": entries, "no_entry_needed": []}


def _check_compliance(payload: dict[str, Any]) -> dict[str, Any]:
    entries = _objects(payload, "entries", "compliance_checker")
    decisions = _objects(payload, "decisions", "compliance_checker")
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for decision in decisions:
        by_subject.setdefault(str(decision.get("subject", "")), []).append(decision)

    findings: list[dict[str, Any]] = []
    for entry in sorted(entries, key=lambda e: str(e.get("entry_id", ""))):
        entry_id = _text(entry, "entry_id")
        amount = _money(entry, "amount")
        if entry.get("account") == SUSPENSE:
            note = f"unexplained item parked in suspense ({_fmt(amount)}); clear it before close"
            findings.append(_finding(entry_id, "warning", note))
        if abs(amount) >= LARGE_AMOUNT:
            note = f"large adjustment of {_fmt(amount)} (at least {_fmt(LARGE_AMOUNT)})"
            findings.append(_finding(entry_id, "warning", note))
        for decision in by_subject.get(entry_id, []):
            verdict = decision.get("verdict")
            reasons = "; ".join(str(r) for r in decision.get("reasons") or []) or "no reason given"
            policy = decision.get("policy", "policy")
            if verdict == "deny":
                findings.append(_finding(entry_id, "blocker", f"denied by {policy}: {reasons}"))
            elif verdict == "require_approval":
                note = f"needs approval under {policy}: {reasons}"
                findings.append(_finding(entry_id, "info", note))

    warnings = sum(f["severity"] == "warning" for f in findings)
    blockers = sum(f["severity"] == "blocker" for f in findings)
    summary = (
        f"Reviewed {len(entries)} adjusting entries for {payload.get('tenant', '?')} "
        f"{payload.get('period', '?')}: {warnings} warning(s), {blockers} blocker(s)."
    )
    summary += " Blockers must be resolved before the close." if blockers else " No blockers."
    return {"summary": summary, "findings": findings}


def _write_memo(payload: dict[str, Any]) -> dict[str, Any]:
    entries = _objects(payload, "entries", "close_memo_writer")
    counts = {k: _count(payload, k) for k in ("matched", "unmatched_bank", "unmatched_ledger")}
    amounts = [_money(e, "amount") for e in entries]
    by_account: dict[str, list[Decimal]] = {}
    for entry, amount in zip(entries, amounts, strict=True):
        by_account.setdefault(str(entry.get("account", "?")), []).append(amount)

    lines = [
        f"Month-end close memo: {payload.get('tenant', '?')}, period {payload.get('period', '?')}",
        f"Reconciliation: {counts['matched']} bank lines matched; {counts['unmatched_bank']} bank "
        f"lines and {counts['unmatched_ledger']} ledger entries left unmatched.",
        f"Adjustments: {len(entries)} entries, net {_fmt(sum(amounts, Decimal(0)))}, "
        f"gross {_fmt(sum((abs(a) for a in amounts), Decimal(0)))}.",
    ]
    for account in sorted(by_account):
        values = by_account[account]
        lines.append(f"  {account}: {len(values)} entries, {_fmt(sum(values, Decimal(0)))}")
    lines.append(f"Compliance: {payload.get('compliance_summary') or 'no review recorded.'}")
    lines.append("Written by the local rule-based model server (not an LLM).")
    return {"memo": "\n".join(lines)}


_ACCOUNT = re.compile(r"\b\d{4}-[a-z][a-z-]*[a-z]\b")


def _revise(payload: dict[str, Any]) -> dict[str, Any]:
    """Rules for a revision: an account named in the comment (e.g. "book these to
    6900-suspense") moves every entry there; otherwise the entries come back unchanged, with the
    comment noted in each rationale (a rule-based server cannot do more)."""
    entries = _objects(payload, "entries", "reviser")
    comment = str(payload.get("comment", ""))
    named = _ACCOUNT.search(comment)
    revised = []
    for entry in entries:
        account = named.group(0) if named else _text(entry, "account")
        note = f"moved to {account}" if named else "unchanged: no account named in the comment"
        revised.append(
            _entry(
                _text(entry, "entry_id"),
                account,
                _money(entry, "amount"),
                [str(i) for i in _items(entry, "source_ids", "reviser")],
                f"{entry.get('rationale', '')} Revised after review ({comment!r}): {note}.",
            )
        )
    return {"entries": revised}


# -- HR onboarding: blackboard agents ---------------------------------------------------------

#: What a role needs, least privilege first (a privileged access last, so a manager approves it).
_ROLE_ACCESS: dict[str, list[str]] = {
    "engineer": ["email:mailbox", "sso:user", "github:member", "jira:user", "aws:admin"],
    "sales-rep": ["email:mailbox", "sso:user", "salesforce:user"],
}
_BASE_ACCESS = ["email:mailbox", "sso:user"]
_COMPANY_POLICIES = [
    ("code-of-conduct", "how we treat each other, customers and partners"),
    ("information-security", "protect credentials and devices; report incidents at once"),
    ("acceptable-use", "company systems are for company work"),
]
_ROLE_POLICIES: dict[str, list[tuple[str, str]]] = {
    "engineer": [
        ("secure-development", "reviews, secrets never in code, dependencies kept current"),
        ("production-access", "production changes go through change management"),
    ],
    "sales-rep": [
        ("anti-bribery", "no gifts or payments to win business"),
        ("customer-data-handling", "customer data stays in the CRM"),
    ],
}
_COUNTRY_POLICIES: dict[str, list[tuple[str, str]]] = {
    "DE": [("gdpr-employee-data", "how your personal data is processed (GDPR)")],
    "FR": [("right-to-disconnect", "no work messages expected outside working hours")],
    "US": [("at-will-employment-notice", "the terms of at-will employment")],
}


def _hire(payload: dict[str, Any], agent: str) -> dict[str, Any]:
    hire = payload.get("hire")
    if not isinstance(hire, dict):
        raise AgentInputError(f"{agent}: input field 'hire' must be an object")
    return hire


def _checklist_write(payload: dict[str, Any], item: str, reason: str) -> dict[str, Any]:
    """Append ``item`` to the shared checklist as this agent read it (keeping every item)."""
    board = payload.get("board") if isinstance(payload.get("board"), dict) else {}
    slot = board.get("checklist") if isinstance(board, dict) else None
    items = slot.get("value") if isinstance(slot, dict) else None
    current = [str(i) for i in items] if isinstance(items, list) else []
    return {"key": "checklist", "items": [*current, item], "reason": reason}


def _verify_identity(payload: dict[str, Any]) -> dict[str, Any]:
    hire = _hire(payload, "identity_verifier")
    employee = str(hire.get("employee_id", "?"))
    if hire.get("id_document_verified") is True:
        result = [f"verified: {employee}", "identity document checked by HR"]
        why = "the HRIS records a checked identity document"
    else:
        result = [f"unverified: {employee}", "no checked identity document in the HRIS"]
        why = "the HRIS has no checked identity document"
    return {
        "writes": [
            {"key": "identity", "items": result, "reason": why},
            _checklist_write(payload, "identity checked", "identity verification done"),
        ]
    }


def _educate_policies(payload: dict[str, Any]) -> dict[str, Any]:
    hire = _hire(payload, "policy_educator")
    role, country = str(hire.get("role", "")), str(hire.get("country", ""))
    found = [*_COMPANY_POLICIES, *_ROLE_POLICIES.get(role, []), *_COUNTRY_POLICIES.get(country, [])]
    return {
        "writes": [
            {
                "key": "policies",
                "items": [f"{name}: {text}" for name, text in found],
                "reason": f"company policies plus those for role {role!r} in country {country!r}",
            },
            _checklist_write(payload, "policies explained", "policy briefing written"),
        ]
    }


def _prompt_entitlements(payload: dict[str, Any]) -> dict[str, Any]:
    hire = _hire(payload, "entitlement_prompter")
    role = str(hire.get("role", ""))
    access = _ROLE_ACCESS.get(role, _BASE_ACCESS)
    return {
        "writes": [
            {
                "key": "entitlements",
                "items": list(access),
                "reason": f"what a {role or 'new hire'} needs from day one",
            },
            _checklist_write(payload, "accesses proposed", "entitlement proposal written"),
        ]
    }


# -- auction: bidders and the document reviewer (workflows/auction.py) -----------------------

#: Risky clauses the document reviewer flags: (pattern, finding).
_RISKY_CLAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"unlimited liability", re.I), "unlimited liability"),
    (re.compile(r"auto(matic(ally)?)?[- ]renew", re.I), "automatic renewal"),
    (re.compile(r"\bpenalt(y|ies)\b", re.I), "penalty clause"),
    (re.compile(r"\bexclusiv(e|ity)\b", re.I), "exclusivity"),
    (re.compile(r"\bindemnif", re.I), "indemnity"),
    (re.compile(r"terminat\w* without notice", re.I), "termination without notice"),
]


def _task_document(payload: dict[str, Any], agent: str) -> dict[str, Any]:
    task = payload.get("task")
    document = task.get("document") if isinstance(task, dict) else None
    if not isinstance(document, dict) or not isinstance(document.get("text"), str):
        raise AgentInputError(f"{agent}: input field 'task.document.text' must be a string")
    return document


def _bid(payload: dict[str, Any]) -> dict[str, Any]:
    """Bid unless the document is longer than the tier accepts; expect ~25 tokens of answer
    per risky clause plus 60 for the summary."""
    document = _task_document(payload, "auction_bidder")
    tier = payload.get("bidder")
    if not isinstance(tier, dict):
        raise AgentInputError("auction_bidder: input field 'bidder' must be an object")
    limit = tier.get("max_input_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise AgentInputError(
            "auction_bidder: input field 'bidder.max_input_tokens' must be an int"
        )
    tokens = estimate_tokens(str(document["text"]))
    if tokens > limit:
        return {
            "bid": False,
            "expected_completion_tokens": 0,
            "reason": f"the document has ~{tokens} tokens; this tier accepts {limit}",
        }
    clauses = sum(1 for pattern, _ in _RISKY_CLAUSES if pattern.search(str(document["text"])))
    return {
        "bid": True,
        "expected_completion_tokens": 60 + 25 * clauses,
        "reason": f"~{tokens} tokens to read, {clauses} clauses to look at",
    }


def _review_document(payload: dict[str, Any]) -> dict[str, Any]:
    document = _task_document(payload, "document_reviewer")
    text = str(document["text"])
    title = str(document.get("title", document.get("doc_id", "document")))
    findings = [
        f"{finding}: the document contains {match.group(0)!r}"
        for pattern, finding in _RISKY_CLAUSES
        if (match := pattern.search(text))
    ]
    verdict = "flag" if findings else "approve"
    summary = (
        f"{title}: {len(findings)} risky clause(s) found, needs legal attention."
        if findings
        else f"{title}: no risky clause found. Fine to sign as is."
    )
    return {"verdict": verdict, "findings": findings, "summary": summary}


# -- customer support: triage, L2 research, summary, ticket draft ----------------------------

#: Word stems per support category. The "large" model (any model name without "small") uses
#: every stem; "small" models only the first five of each list: a weaker model imitated by a
#: smaller vocabulary, so the router has a real reason to escalate. Still rules, not an LLM.
_TRIAGE_LEXICON: dict[str, list[str]] = {
    "billing": [
        "refund",
        "invoice",
        "charg",
        "bill",
        "payment",
        "paid",
        "price",
        "receipt",
        "vat",
        "card",
        "credit",
        "discount",
        "coupon",
        "fee",
        "money back",
        "overcharg",
        "statement",
    ],
    "technical": [
        "error",
        "crash",
        "bug",
        "broken",
        "not working",
        "doesn't work",
        "fail",
        "slow",
        "freez",
        "api",
        "timeout",
        "sync",
        "upload",
        "install",
        "blank",
        "glitch",
        "load",
        "spinning",
        "export",
    ],
    "account": [
        "password",
        "log in",
        "login",
        "sign in",
        "locked",
        "2fa",
        "two-factor",
        "username",
        "profile",
        "verif",
        "reset link",
        "access my account",
        "email address",
        "authenticator",
    ],
    "shipping": [
        "deliver",
        "shipping",
        "tracking",
        "parcel",
        "package",
        "courier",
        "arriv",
        "dispatch",
        "shipment",
        "lost in transit",
        "box",
        "warehouse",
        "postal",
        "doorstep",
    ],
    "cancellation": [
        "cancel",
        "unsubscribe",
        "terminat",
        "close my account",
        "stop my subscription",
        "end my plan",
        "auto-renew",
        "renewal",
        "no longer need",
        "switch to",
        "opt out",
        "leave your service",
        "not renew",
    ],
}


def _triage(payload: dict[str, Any], model: str) -> dict[str, Any]:
    text = f"{payload.get('subject', '')} {payload.get('body', '')}".lower()
    small = "small" in model
    scores = {
        category: sum(text.count(stem) for stem in (stems[:5] if small else stems))
        for category, stems in _TRIAGE_LEXICON.items()
    }
    total = sum(scores.values())
    if total == 0:
        return {"category": "technical", "confidence": 0.2}
    best = max(scores, key=lambda c: (scores[c], -list(scores).index(c)))
    confidence = scores[best] / total
    if small:
        confidence *= 0.85  # a small model is less sure of itself
    return {"category": best, "confidence": round(min(confidence, 0.99), 3)}


_WORD = re.compile(r"[a-z0-9]+")


def _research(payload: dict[str, Any]) -> dict[str, Any]:
    passages = _objects(payload, "passages", "l2_researcher")
    question = set(_WORD.findall(f"{payload.get('subject', '')} {payload.get('body', '')}".lower()))
    if not passages:
        return {"answer": "No knowledge article covers this case.", "cited": [], "confidence": 0.1}
    ranked = sorted(
        passages,
        key=lambda p: -len(question & set(_WORD.findall(str(p.get("text", "")).lower()))),
    )
    top = ranked[0]
    overlap = len(question & set(_WORD.findall(str(top.get("text", "")).lower())))
    first = str(top.get("text", "")).split(". ")[0].rstrip(".")
    return {
        "answer": f"{first}.",
        "cited": [_text(top, "passage_id")],
        "confidence": round(min(0.95, 0.2 + 0.1 * overlap), 3),
    }


def _summarize_case(payload: dict[str, Any]) -> dict[str, Any]:
    research = str(payload.get("research") or "no research needed")
    return {
        "summary": f"{payload.get('category', '?')} case {payload.get('case_id', '?')}: "
        f"{payload.get('subject', '')}. Findings: {research[:200]}"
    }


def _draft_ticket(payload: dict[str, Any]) -> dict[str, Any]:
    category = str(payload.get("category", "general"))
    research = str(payload.get("research") or "")
    status = "resolved" if research and not research.startswith("No knowledge") else "open"
    reply = (
        f"Thank you for contacting us about your {category} question. {research}".strip()
        if status == "resolved"
        else f"Thank you for contacting us about your {category} question; a specialist is on it."
    )
    return {"status": status, "reply": reply, "tags": [category]}


_AGENTS = {
    "reconciler": _reconcile,
    "reviser": _revise,
    "compliance_checker": _check_compliance,
    "close_memo_writer": _write_memo,
    "identity_verifier": _verify_identity,
    "policy_educator": _educate_policies,
    "entitlement_prompter": _prompt_entitlements,
    "auction_bidder": _bid,
    "document_reviewer": _review_document,
    "l2_researcher": _research,
    "case_summarizer": _summarize_case,
    "ticketing_integrator": _draft_ticket,
}
#: Agents whose answer depends on the model asked for (see _TRIAGE_LEXICON).
_MODEL_AGENTS = {"triage_classifier": _triage}


def _items(payload: dict[str, Any], key: str, agent: str) -> list[Any]:
    value = payload.get(key)
    if not isinstance(value, list):
        raise AgentInputError(f"{agent}: input field {key!r} must be a list, got {value!r:.60}")
    return value


def _objects(payload: dict[str, Any], key: str, agent: str) -> list[dict[str, Any]]:
    value = _items(payload, key, agent)
    for item in value:
        if not isinstance(item, dict):
            raise AgentInputError(f"{agent}: every item of {key!r} must be an object")
    return value


def _text(obj: Any, key: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str) or not obj[key]:
        raise AgentInputError(f"every item needs a non-empty string {key!r}, got {obj!r:.80}")
    return str(obj[key])


def _money(obj: Any, key: str) -> Decimal:
    raw = obj.get(key) if isinstance(obj, dict) else None
    try:
        if isinstance(raw, bool) or raw is None:
            raise InvalidOperation
        value = Decimal(str(raw))
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise AgentInputError(f"{key!r} must be a decimal amount, got {raw!r}") from None
    return value.quantize(CENT)


def _count(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentInputError(f"close_memo_writer: input field {key!r} must be an integer")
    return value


def _fmt(amount: Decimal) -> str:
    return f"{amount.quantize(CENT):.2f}"


def _entry(
    entry_id: str, account: str, amount: Decimal, sources: list[str], why: str
) -> dict[str, Any]:
    return {
        "entry_id": entry_id,
        "account": account,
        "amount": _fmt(amount),
        "source_ids": sources,
        "rationale": why,
    }


def _finding(entry_id: str, severity: str, note: str) -> dict[str, str]:
    return {"entry_id": entry_id, "severity": severity, "note": note}


# -- the wire format --------------------------------------------------------------------------


def message_text(message: Any) -> str:
    """The text of a chat message; content may be a string or a list of text parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def agent_name(body: Any) -> str | None:
    """The agent a request speaks to (first line of the system message), if it names one."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            first = message_text(message).strip().splitlines()[:1]
            match = re.fullmatch(r"agent:\s*(\S+)\s*", first[0]) if first else None
            return match.group(1) if match else None
    return None


def parse_chat_request(body: Any) -> tuple[str, dict[str, Any]]:
    """(agent name, agent input) of a chat completion request; AgentInputError if unusable."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise AgentInputError("the request body must be a JSON object with a 'messages' list")
    if body.get("stream"):
        raise AgentInputError("streaming is not supported by the local model server")
    agent = agent_name(body)
    if agent is None:
        raise AgentInputError("the system message's first line must be 'agent: <name>'")
    users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise AgentInputError(f"{agent}: no user message with the agent input")
    forced_tool(body)  # a tool_call request must force the one tool it offers
    check_response_format(body.get("response_format"))
    try:
        # the first user message is the agent input; a later one is a repair turn's feedback,
        # which rules cannot use: they answer the input again
        payload = json.loads(message_text(users[0]))
    except json.JSONDecodeError as err:
        raise AgentInputError(f"{agent}: the user message is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise AgentInputError(f"{agent}: the user message must be a JSON object")
    return agent, payload


def check_response_format(fmt: Any) -> None:
    """AgentInputError naming the field unless ``response_format`` is absent or one of the
    shapes OpenAI-compatible servers take: ``{"type": "text"}``, ``{"type": "json_object"}``
    (optionally with a ``schema``, as llama-cpp-python's server takes it) or ``{"type":
    "json_schema", "json_schema": {"name": ..., "schema": {...}}}``."""
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if (
            not isinstance(spec, dict)
            or not spec.get("name")
            or not isinstance(spec.get("schema"), dict)
        ):
            raise AgentInputError(
                "'response_format.json_schema' must be an object with a 'name' and a 'schema'"
            )
    elif kind == "json_object":
        if "schema" in fmt and not isinstance(fmt["schema"], dict):
            raise AgentInputError("'response_format.schema' must be a JSON schema object")
    elif kind != "text":
        raise AgentInputError(
            f"'response_format.type' must be one of text, json_object, json_schema; got {kind!r}"
        )


def forced_tool(body: dict[str, Any]) -> str | None:
    """The function a ``tool_call`` request forces (``tools`` + ``tool_choice``), else None;
    AgentInputError when the request offers tools without forcing one of them."""
    tools = body.get("tools")
    if tools is None:
        return None
    names = [
        t["function"].get("name")
        for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ] if isinstance(tools, list) else []  # fmt: skip
    choice = body.get("tool_choice")
    chosen = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not names or chosen not in names:
        raise AgentInputError(
            "'tool_choice' must force one of the offered 'tools' ({'type': 'function', "
            "'function': {'name': ...}}): this server answers with that function's arguments"
        )
    return str(chosen)


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token, as the usual rule of thumb for English text."""
    return math.ceil(len(text) / 4)


def chat_completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object answering ``body`` with ``content``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    prompt = estimate_tokens("".join(message_text(m) for m in messages))
    completion = estimate_tokens(content)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    finish = "stop"
    try:
        tool = forced_tool(body)
    except AgentInputError:
        tool = None
    if tool is not None:  # the answer is the forced function's arguments
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": tool, "arguments": content},
        }
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or LOCAL_MODEL_NAME),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


# -- agents that act (workflows/agent_loop.py): tool_calls -------------------------------------

#: The tool an agent that acts finishes with (workflows/contracts/tools.py FINAL_ANSWER_TOOL).
FINAL_ANSWER = "final_answer"


def is_agent_turn(body: Any) -> bool:
    """A turn of an agent that acts: tools offered with ``tool_choice: auto`` (or none), one of
    them ``final_answer``. (A forced tool is a structured-output request, answered by rules.)"""
    if not isinstance(body, dict) or not isinstance(body.get("tools"), list):
        return False
    if body.get("tool_choice", "auto") not in ("auto", "required"):
        return False
    return FINAL_ANSWER in _offered(body)


def _offered(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        t["function"]["name"]: t["function"]
        for t in body.get("tools", [])
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
    }


#: What activities/agent_turn.py tells a model without native tool calling (the tools follow).
STRUCTURED_MARKER = "You have no native tool calling here."


def structured_agent_turn(body: Any) -> dict[str, Any] | None:
    """A turn of an agent that acts on a model without native tool calling: the tools are in
    the system prompt (after STRUCTURED_MARKER), the conversation is the user message (a JSON
    list: messages, ``{"you_called": [...]}``, ``{"result_of", "content"}``). The answer is
    ``{"calls": [{"name", "arguments"}], "final": ""}`` or ``{"calls": [], "final": ...}``,
    by the same rules as a native turn; None when the request is no such turn."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    system = next((message_text(m) for m in messages if m.get("role") == "system"), "")
    if STRUCTURED_MARKER not in system:
        return None
    try:
        tools = json.loads(system[system.rindex("\n") + 1 :])
        flat = json.loads(message_text(next(m for m in messages if m.get("role") == "user")))
    except (ValueError, StopIteration):
        return None
    rebuilt: list[dict[str, Any]] = [m for m in messages if m.get("role") == "system"]
    for item in flat if isinstance(flat, list) else []:
        if not isinstance(item, dict):
            continue
        if "result_of" in item:
            rebuilt.append({"role": "tool", "content": item.get("content") or ""})
        elif "you_called" in item:
            calls = [{"function": c} for c in item["you_called"] if isinstance(c, dict)]
            rebuilt.append({"role": "assistant", "content": "", "tool_calls": calls})
        else:
            rebuilt.append({"role": item.get("role", "user"), "content": item.get("content")})
    turn = {"messages": rebuilt, "tools": [{"type": "function", "function": t} for t in tools]}
    calls = agent_turn_calls(turn)
    if calls and calls[0]["name"] == FINAL_ANSWER:
        return {"calls": [], "final": json.dumps(calls[0]["arguments"])}
    return {
        "calls": [{"name": c["name"], "arguments": json.dumps(c["arguments"])} for c in calls],
        "final": "",
    }


def tool_calls_completion(
    body: dict[str, Any], calls: list[dict[str, Any]], content: str | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` whose assistant message asks for ``calls`` (each ``{"name",
    "arguments"}``; arguments a JSON object or its text), as the OpenAI API answers them."""
    answer = chat_completion({k: v for k, v in body.items() if k != "tools"}, content or "")
    items = []
    for call in calls:
        arguments = call.get("arguments", {})
        items.append(
            {
                "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    text = "".join(i["function"]["arguments"] for i in items)
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "tool_calls": items,
    }
    answer["choices"][0]["finish_reason"] = "tool_calls"
    answer["usage"]["completion_tokens"] = estimate_tokens(text + (content or ""))
    answer["usage"]["total_tokens"] = (
        answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    )
    return answer


def first_user_task(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON object of the first user message (an acting agent's task); {} when there is no
    user message or it is not a JSON object."""
    users = [m for m in messages if m.get("role") == "user"]
    try:
        task = json.loads(message_text(users[0])) if users else {}
    except json.JSONDecodeError:
        return {}
    return task if isinstance(task, dict) else {}


def agent_turn_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules of an agent that acts: look the customer up, search the knowledge base, then
    finish with ``final_answer`` built from what the tools answered (its schema's fields)."""
    offered = _offered(body)
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    called = [
        c.get("function", {}).get("name")
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    task = first_user_task(messages)
    if task.get("plan_id") and isinstance(task.get("actions"), list):
        return _carry_out_plan(task, offered, messages)
    if agent_name(body) == "l2_researcher":  # the support case's researcher that acts
        results = [message_text(m) for m in messages if m.get("role") == "tool"]
        return research_case_calls(task, set(offered), list(zip(called, results, strict=False)))
    if "bench_lookup" in offered:  # bench/agent_loop_bench.py: calls 1..task["calls"]
        last = [message_text(m) for m in messages if m.get("role") == "tool"][-1:]
        found = re.match(r"bench n=(\d+)", last[0]) if last else None
        n = int(found.group(1)) + 1 if found else 1
        if n <= int(task.get("calls", 1)):
            return [{"name": "bench_lookup", "arguments": {"n": n}}]
    elif "lookup_customer" in offered and "lookup_customer" not in called and task.get("customer"):
        return [{"name": "lookup_customer", "arguments": {"customer": str(task["customer"])}}]
    if "search_knowledge" in offered and "search_knowledge" not in called:
        query = str(task.get("subject") or task.get("question") or json.dumps(task))[:500]
        return [{"name": "search_knowledge", "arguments": {"query": query or "help"}}]
    results = [message_text(m) for m in messages if m.get("role") == "tool"]
    cited = sorted(set(re.findall(r"^\[([^\]\s]+)\]", "\n".join(results), re.M)))
    said = " ".join(r.split("] ", 1)[-1] for r in results if not r.startswith("error"))
    answer = (said or "We looked into your case.")[:400]
    schema = offered[FINAL_ANSWER].get("parameters") or {}
    final: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind == "array":
            final[name] = cited if name == "cited" else []
        elif kind in ("number", "integer"):
            final[name] = 0
        elif kind == "boolean":
            final[name] = False
        else:
            final[name] = answer
    return [{"name": FINAL_ANSWER, "arguments": final}]


def _carry_out_plan(
    task: dict[str, Any], offered: dict[str, Any], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The onboarding executor's rules: call each planned action's tool once, in the plan's
    order (one call a turn: the commits keep the plan's order), then finish naming the actions
    whose tool committed them."""
    asked: set[str] = set()
    for m in messages:
        for c in m.get("tool_calls") or [] if m.get("role") == "assistant" else []:
            raw = c.get("function", {}).get("arguments") if isinstance(c, dict) else None
            try:
                args = json.loads(raw) if isinstance(raw, str) else (raw or {})
            except json.JSONDecodeError:
                args = {}
            if isinstance(args, dict) and args.get("action_key"):
                asked.add(str(args["action_key"]))
    calls = [
        {
            "name": str(a["tool"]),
            "arguments": {"plan_id": task["plan_id"], "action_key": str(a["action_key"])},
        }
        for a in task["actions"]
        if isinstance(a, dict)
        and a.get("action_key")
        and str(a["action_key"]) not in asked
        and str(a.get("tool")) in offered
    ]
    if calls:
        return calls[:1]
    results = [message_text(m) for m in messages if m.get("role") == "tool"]
    done = sorted({r.split(" committed as ", 1)[0] for r in results if " committed as " in r})
    summary = f"carried out {len(done)} of {len(task['actions'])} planned actions"
    return [{"name": FINAL_ANSWER, "arguments": {"summary": summary, "carried_out": done}}]


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def parse_embeddings_request(body: Any) -> tuple[str, list[str], str]:
    """(model, texts, encoding) of an embeddings request; AgentInputError naming the field."""
    if not isinstance(body, dict):
        raise AgentInputError("the request body must be a JSON object with 'input' and 'model'")
    model = body.get("model")
    if model not in EMBEDDING_MODEL_ALIASES:
        known = ", ".join(sorted(EMBEDDING_MODEL_ALIASES))
        raise AgentInputError(f"'model' must be one of: {known}; got {model!r}")
    # The openai SDK asks for base64 (little-endian float32) unless told otherwise.
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise AgentInputError(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    if body.get("dimensions") not in (None, EMBEDDING_DIMENSIONS):
        raise AgentInputError(
            f"'dimensions' must be {EMBEDDING_DIMENSIONS} for {EMBEDDING_MODEL_NAME} "
            f"(it cannot be shortened), got {body.get('dimensions')!r}"
        )
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise AgentInputError("'input' must be a string or a non-empty list of strings")
    if len(texts) > MAX_INPUT_ITEMS:
        raise AgentInputError(f"'input' holds {len(texts)} items; at most {MAX_INPUT_ITEMS}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            # token-id arrays are valid for OpenAI but mean nothing to this tokenizer
            raise AgentInputError(f"'input[{i}]' must be a non-empty string")
    return str(model), texts, encoding


def embeddings_response(texts: list[str], encoding: str = "float") -> dict[str, Any]:
    """An OpenAI ``list`` of ``embedding`` objects for ``texts`` (the real model, on the CPU)."""
    embedder = shared_embedder()
    vectors = embedder.embed(texts)
    tokens = embedder.count_tokens(texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(vectors)
        ],
        "model": EMBEDDING_MODEL_NAME,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class ModelRequestHandler(JsonRequestHandler):
    """HTTP front of the rules. Subclasses override ``chat_completion`` to inject faults."""

    def do_GET(self) -> None:
        if self.route == "/health":
            self.send_json(200, {"status": "ok", "model": LOCAL_MODEL_NAME})
        elif self.route in ("/v1/models", "/models"):
            models = [
                {"id": LOCAL_MODEL_NAME, "object": "model", "created": 0, "owned_by": "baton"},
                {"id": EMBEDDING_MODEL_NAME, "object": "model", "created": 0, "owned_by": "baton"},
            ]
            self.send_json(200, {"object": "list", "data": models})
        else:
            self.send_json(404, error_body(f"no route GET {self.route}"))

    def do_POST(self) -> None:
        raw = self.read_body()
        # Any path prefix serves too (/backup/v1/..., /us/v1/...): one server process can
        # stand in for several endpoints of the model catalogue (config/models.json).
        if self.route.endswith(("/v1/chat/completions", "/chat/completions")):
            self.chat_completion(raw)
        elif self.route in ("/v1/embeddings", "/embeddings"):
            self.embeddings(raw)
        else:
            self.send_json(404, error_body(f"no route POST {self.route}"))

    def embeddings(self, raw: bytes) -> None:
        """Answer one embeddings request with all-MiniLM-L6-v2 vectors (400 if unusable)."""
        try:
            _, texts, encoding = parse_embeddings_request(json.loads(raw or b"null"))
            self.log_note = f"embeddings={len(texts)}"
            answer = embeddings_response(texts, encoding)
        except (json.JSONDecodeError, AgentInputError) as err:
            self.send_bad_request(err)
            return
        except EmbeddingsUnavailable as err:
            self.send_json(501, error_body(str(err), "server_error"))
            return
        except Exception as err:  # the model failed: a 500 the client can retry, not a hang-up
            self.send_json(500, error_body(f"embedding failed: {err!r}", "server_error"))
            return
        self.send_json(200, answer)

    def chat_completion(self, raw: bytes) -> None:
        """Answer one chat completion request by the rules (or 400 if it cannot be answered)."""
        try:
            body = json.loads(raw or b"null")
            if is_agent_turn(body):  # an agent that acts: the answer is tool calls
                self.log_note = f"agent={agent_name(body)} turn"
                self.send_json(200, tool_calls_completion(body, agent_turn_calls(body)))
                return
            structured = structured_agent_turn(body)
            if structured is not None:  # the same, for a model without native tool calling
                self.log_note = f"agent={agent_name(body)} structured turn"
                self.send_completion(body, json.dumps(structured))
                return
            agent, payload = parse_chat_request(body)
            self.log_note = f"agent={agent}"
            answer = respond(agent, payload, str(body.get("model") or LOCAL_MODEL_NAME))
        except (json.JSONDecodeError, AgentInputError) as err:
            self.send_bad_request(err)
            return
        self.send_completion(body, json.dumps(answer))

    def send_bad_request(self, err: json.JSONDecodeError | AgentInputError) -> None:
        """A 400 for a body that is not JSON, or not what the route takes (the error says)."""
        if isinstance(err, json.JSONDecodeError):
            self.send_json(400, error_body(f"the request body is not valid JSON ({err})"))
        else:
            self.send_json(400, error_body(str(err)))

    def send_completion(self, body: dict[str, Any], content: str) -> None:
        self.send_json(200, chat_completion(body, content))


class ModelServer(BackgroundHTTPServer):
    """The rule-based model server on a background thread; ``url`` is the SDK's ``base_url``."""

    handler_class: type[JsonRequestHandler] = ModelRequestHandler

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1"


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(
        "python -m baton.devstack.model_server",
        "Local OpenAI-compatible model server (deterministic rules, not an LLM).",
        DEFAULT_MODEL_PORT,
    )
    args = parser.parse_args(argv)
    banner = f"model server (rules, not an LLM) serving {LOCAL_MODEL_NAME!r} at {{url}}/v1"
    ModelServer(log_requests=True).serve_until_signalled(args.host, args.port, banner)


def _as_agent_rule(rule: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    def checked(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return rule(payload)
        except ValueError as err:
            raise AgentInputError(str(err)) from None

    return checked


# The customer-onboarding agents' rules live in their own module (baton/devstack/customer_rules.py)
_AGENTS.update({name: _as_agent_rule(rule) for name, rule in CUSTOMER_AGENTS.items()})


# last: `python -m` serves from here, so every rule above must be registered by now
if __name__ == "__main__":
    main()
