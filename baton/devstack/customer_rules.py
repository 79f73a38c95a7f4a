"""Rules of the local model server for the customer-onboarding agents: NOT a language model.

The planner, the intro-email writer, the discount analyst and the onboarding sequencer of
workflows/customer_onboarding.py, each a deterministic function of the agent's input (a
``CustomerAgentInput`` as JSON), answering the JSON its schema in activities/customer_agents.py
describes. model_server.py adds them to its agent table (turning ``ValueError`` into its
``AgentInputError``, a 400 naming the problem).

Must not: be imported by workflows or activities; import model_server (it imports this).
"""

from __future__ import annotations

from typing import Any


class AgentInputError(ValueError):
    """The agent input is not what the rule expects."""


#: Discount a customer is eligible for without extra justification (policy "pol-discounts"):
#: a three-year commitment earns up to 15%, otherwise 10%.
MULTI_YEAR_MONTHS = 36
MULTI_YEAR_LIMIT = 15.0
STANDARD_LIMIT = 10.0

_GREETINGS = {
    "de": ("Willkommen bei Acme Insights, {name}", "Guten Tag"),
    "fr": ("Bienvenue chez Acme Insights, {name}", "Bonjour"),
}


def _customer(payload: dict[str, Any], agent: str) -> dict[str, Any]:
    customer = payload.get("customer")
    if not isinstance(customer, dict) or not isinstance(customer.get("customer_id"), str):
        raise AgentInputError(f"{agent}: input field 'customer' must be an object with customer_id")
    return customer


def _number(customer: dict[str, Any], key: str) -> float:
    value = customer.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentInputError(f"customer.{key} must be a number, got {value!r}")
    return float(value)


def plan(payload: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(payload, "customer_planner")
    name = str(customer.get("name", customer["customer_id"]))
    language = str(customer.get("language") or "en")
    requested = _number(customer, "requested_discount_pct")
    notes = payload.get("notes") or []
    steps = [
        {
            "step_id": "intro-email",
            "kind": "intro_email",
            "instructions": f"Introduce the customer success team to {name} in language "
            f"'{language}'; propose the kickoff call; no promotions.",
        }
    ]
    if requested > 0:
        steps.append(
            {
                "step_id": "discount-check",
                "kind": "discount_check",
                "instructions": f"Check whether the requested {requested:g}% discount on "
                f"contract {customer.get('contract_id') or '?'} "
                f"({int(_number(customer, 'term_months'))} months) is within the discount policy.",
            }
        )
    steps.append(
        {
            "step_id": "onboarding-sequence",
            "kind": "onboarding_sequence",
            "instructions": f"Schedule the standard onboarding sequence for {name} "
            f"({customer.get('segment') or 'customer'}), training in '{language}'.",
        }
    )
    return {
        "steps": steps,
        "rationale": f"{name} is a new {customer.get('segment') or ''} customer "
        f"({customer.get('plan') or 'plan ?'}, {int(_number(customer, 'annual_value_eur'))} EUR "
        f"a year); {len(notes)} CRM notes read. Standard playbook: introduce, "
        + ("check the requested discount, " if requested > 0 else "")
        + "then schedule onboarding.",
    }


def intro_email(payload: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(payload, "intro_email_writer")
    name = str(customer.get("name", customer["customer_id"]))
    language = str(customer.get("language") or "en")
    subject, hello = _GREETINGS.get(language, ("Welcome to Acme Insights, {name}", "Hello"))
    body = (
        f"{hello},\n\nthank you for choosing Acme Insights. I am your customer success manager "
        f"and will guide {name} through onboarding: a kickoff call in the coming days, the "
        "workspace setup (single sign-on, roles, your first data connector), training sessions "
        "for admins and users, and a 30-day adoption review.\n\nWhich dates suit you for the "
        "kickoff call?\n\nBest regards,\nAcme Insights Customer Success"
    )
    if language != "en":
        body += f"\n\n(Training and follow-ups can be held in '{language}'.)"
    return {"subject": subject.format(name=name), "body": body, "language": language}


def assess_discount(payload: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(payload, "discount_analyst")
    requested = _number(customer, "requested_discount_pct")
    term = int(_number(customer, "term_months"))
    limit = MULTI_YEAR_LIMIT if term >= MULTI_YEAR_MONTHS else STANDARD_LIMIT
    eligible = requested <= limit
    recommended = requested if eligible else limit
    why = (
        f"a {term}-month commitment makes the customer eligible for up to {limit:g}% "
        f"({'three-year commitment' if term >= MULTI_YEAR_MONTHS else 'standard'} rule)"
    )
    verdict = (
        f"the requested {requested:g}% is within it"
        if eligible
        else f"the requested {requested:g}% is not; recommend {recommended:g}%"
    )
    return {"eligible": eligible, "recommended_pct": recommended, "rationale": f"{why}; {verdict}."}


def sequence(payload: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(payload, "onboarding_sequencer")
    language = str(customer.get("language") or "en")
    tasks = [
        {"name": "kickoff call", "due_in_days": 5, "owner_role": "customer-success-manager"},
        {
            "name": "workspace setup: SSO, roles, first data connector",
            "due_in_days": 10,
            "owner_role": "solutions-engineer",
        },
        {
            "name": f"admin and end-user training (language '{language}')",
            "due_in_days": 17,
            "owner_role": "customer-success-manager",
        },
        {"name": "30-day adoption review", "due_in_days": 30, "owner_role": "account-manager"},
    ]
    if customer.get("segment") == "enterprise":
        tasks.insert(
            1,
            {
                "name": "assign a named technical account manager",
                "due_in_days": 7,
                "owner_role": "support-lead",
            },
        )
    return {"tasks": tasks}


AGENTS = {
    "customer_planner": plan,
    "intro_email_writer": intro_email,
    "discount_analyst": assess_discount,
    "onboarding_sequencer": sequence,
}
