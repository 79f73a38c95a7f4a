"""Data checked once per bundle revision (activities/policy.py, ``_verified_data``): the
embedded engine keeps the policy data that passed its shape checks under data.baton_verified,
decisions compare instead of re-checking, and anything else is still checked in full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.policy import EmbeddedOpaEngine, PolicyBundle, PolicyLoadError, decide_sync
from tests.policy.test_rego import BASE
from tests.support.paths import POLICY_DIR
from workflows.contracts import PolicyQuery

ESCALATION_DENY = (
    "policy data is incomplete: data.baton.finance.escalation must be a list of tiers, each "
    "with a non-empty list of roles and a whole number sla_seconds >= 1"
)


def verified(engine: EmbeddedOpaEngine) -> dict[str, object]:
    native, _ = engine._engine()
    return native.eval_document("baton_verified")


def test_well_formed_data_is_verified_once_at_load() -> None:
    engine = EmbeddedOpaEngine(POLICY_DIR)
    try:
        copies = verified(engine)
        data = PolicyBundle(POLICY_DIR).current().data["baton"]
        assert copies == {
            "finance_escalation": data["finance"]["escalation"],
            "agent_model_actions": data["agents"]["model_actions"],
            "pii_kinds": data["pii"]["kinds"],
            "pii_redact": sorted(set(data["pii"]["kinds"])),
        }
    finally:
        engine.close()


def test_malformed_data_is_not_verified_and_still_denies(policy_copy: Path) -> None:
    (policy_copy / "data" / "escalation.json").write_text(
        json.dumps({"baton": {"finance": {"escalation": [{"roles": [], "sla_seconds": 1}]}}})
    )
    engine = EmbeddedOpaEngine(policy_copy)
    try:
        assert "finance_escalation" not in verified(engine)
        decision = decide_sync(
            engine, PolicyQuery(policy="baton/finance/posting", input=BASE), "broken-chain"
        )
        assert (decision.verdict, decision.reasons) == ("deny", [ESCALATION_DENY])
    finally:
        engine.close()


def test_no_data_file_may_claim_the_verified_document(policy_copy: Path) -> None:
    (policy_copy / "data" / "sneaky.json").write_text(
        json.dumps({"baton_verified": {"finance_escalation": None}})
    )
    with pytest.raises(PolicyLoadError, match="data.baton_verified is reserved"):
        PolicyBundle(policy_copy).current()
