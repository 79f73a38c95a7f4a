"""Contract fuzzing (hypothesis): what crosses a Temporal boundary either validates or is refused
with a pydantic ValidationError naming the field, never another exception (which would retry a
workflow task forever); valid contracts survive the data converter unchanged; the signature
check and the codec refuse junk cleanly; and the posting policy allows an account only when it is
exactly one of the allowed accounts, whatever unicode it is dressed in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import Payload

from activities.policy import EmbeddedOpaEngine, decide_sync
from baton.encryption import EncryptionCodec, KeyRing, new_key_line
from baton.identity import init_dev_issuer, issue_token
from tests.support.paths import POLICY_DIR
from workflows.contracts import (
    AdjustingEntry,
    ApprovalDecision,
    EntryAmendment,
    FinanceCloseInput,
    OnboardingInput,
    PolicyQuery,
)
from workflows.contracts.security import ApprovalTrust
from workflows.plugin import baton_data_converter
from workflows.signed_approval import AssertionRefused, verify_assertion

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, with the unicode tricks an attacker would use
TRICKY = st.sampled_from(["\u200b", "\u202e", "\u0435", "\uff16", "\x00", "'", '"', "\\", "\n"])
text = st.one_of(st.text(max_size=40), st.builds(lambda a, b: a + b, st.text(max_size=20), TRICKY))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

CONTRACTS: list[type[BaseModel]] = [
    FinanceCloseInput,
    OnboardingInput,
    ApprovalDecision,
    AdjustingEntry,
    EntryAmendment,
    ApprovalTrust,
]


def field_documents(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts over the model's own field names (so validation gets past 'unknown field'), with
    arbitrary values, sometimes missing, sometimes with an extra key."""
    names = list(model.model_fields)
    base = st.fixed_dictionaries({}, optional={n: json_values for n in names})
    return st.one_of(base, st.builds(lambda d, k, v: {**d, k: v}, base, text, json_values))


@pytest.mark.parametrize("model", CONTRACTS, ids=lambda m: m.__name__)
@FUZZ
@given(data=st.data())
def test_contracts_validate_or_name_the_field(model: type[BaseModel], data: st.DataObject) -> None:
    document = data.draw(field_documents(model))
    try:
        value = model.model_validate(document)
    except ValidationError as err:
        for problem in err.errors():
            assert problem["msg"]  # a message for the user
            assert problem["loc"] or problem["type"] in ("model_type", "value_error")
        return
    # what validated survives a JSON round trip unchanged
    assert model.model_validate_json(value.model_dump_json()) == value


NAME = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")
PERIOD = st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(1990, 2999), st.integers(1, 12))


@FUZZ
@given(
    tenant=NAME,
    period=PERIOD,
    requested_by=st.text(min_size=1, max_size=30).filter(str.strip),
    timeout=st.integers(1, 30 * 24 * 3600),
    shadow=st.booleans(),
)
def test_valid_starts_survive_the_data_converter(
    tenant: str, period: str, requested_by: str, timeout: int, shadow: bool
) -> None:
    try:
        inp = FinanceCloseInput(
            tenant=tenant,
            period=period,
            requested_by=requested_by,
            approval_timeout_seconds=timeout,
            shadow=shadow,
        )
    except ValidationError as err:  # some bounds are the contract's own business
        assert err.errors()[0]["loc"], err
        return
    converter = baton_data_converter().payload_converter
    [payload] = converter.to_payloads([inp])
    assert converter.from_payloads([payload], [FinanceCloseInput]) == [inp]
    assert inp.workflow_id().endswith(f"{tenant}/{period}")


@pytest.fixture(scope="module")
def trust_and_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[ApprovalTrust, str]:
    directory = tmp_path_factory.mktemp("issuer")
    issuer = init_dev_issuer(directory)
    return issuer.trust, issue_token(directory, user="carol", roles=["finance-controller"])


@FUZZ
@given(junk=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.hex())))
def test_the_signature_check_refuses_junk_cleanly(
    trust_and_token: tuple[ApprovalTrust, str], junk: str
) -> None:
    trust, _ = trust_and_token
    with pytest.raises(AssertionRefused):
        verify_assertion(junk, trust, datetime.now(UTC))


@FUZZ
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_a_changed_character_never_passes_as_someone_else(
    trust_and_token: tuple[ApprovalTrust, str], position: int, replacement: str
) -> None:
    trust, token = trust_and_token
    i = position % len(token)
    mutated = token[:i] + replacement + token[i + 1 :]
    try:
        identity = verify_assertion(mutated, trust, datetime.now(UTC))
    except AssertionRefused:
        return
    # base64url ignores the unused low bits of a final character: same bytes, same identity
    assert identity.subject == "carol" and identity.roles == ("finance-controller",)


@FUZZ
@given(
    metadata=st.dictionaries(st.sampled_from(["encoding", "encryption-key-id", "x"]), st.binary()),
    data=st.binary(max_size=200),
)
async def test_the_codec_refuses_forged_payloads_cleanly(
    metadata: dict[str, bytes], data: bytes
) -> None:
    codec = EncryptionCodec(KeyRing.parse(new_key_line("k1")))
    payload = Payload(metadata=metadata, data=data)
    try:
        [opened] = await codec.decode([payload])
    except ValueError:
        return
    # only a payload that is not marked encrypted passes, unchanged
    assert metadata.get("encoding") != b"binary/encrypted" and opened == payload


ALLOWED = json.loads((POLICY_DIR / "data" / "finance_limits.json").read_text())["baton"]["finance"][
    "limits"
]["allowed_accounts"]


@pytest.fixture(scope="module")
def opa() -> EmbeddedOpaEngine:
    return EmbeddedOpaEngine(POLICY_DIR, reload_interval=3600)


def posting(account: str, amount: Decimal) -> dict[str, Any]:
    return {
        "action": "post_journal_entry",
        "tenant": "acme",
        "period": {"id": "2101-10", "status": "open"},
        "entry": {"entry_id": "ADJ-F1", "account": account, "amount": float(amount)},
        "preparer": "agent:reconciler",
        "requested_by": "alice",
        "compliance_flagged": False,
        "amended_by": None,
        "approval": None,
    }


@FUZZ
@given(
    account=st.one_of(
        st.sampled_from(ALLOWED),
        st.builds(
            lambda a, i, c: a[: i % (len(a) + 1)] + c + a[i % (len(a) + 1) :],
            st.sampled_from(ALLOWED),
            st.integers(0, 40),
            TRICKY | st.characters(),
        ),
        st.text(max_size=30),
    ),
    cents=st.integers(-99_999, 99_999),
)
def test_policy_allows_only_exactly_allowed_accounts(
    opa: EmbeddedOpaEngine, account: str, cents: int
) -> None:
    query = PolicyQuery(
        policy="baton/finance/posting", input=posting(account, Decimal(cents) / 100), subject="f"
    )
    decision = decide_sync(opa, query, "fuzz")
    if account in ALLOWED:
        assert decision.verdict == "allow", decision.reasons
    else:
        assert decision.verdict == "deny"
        shown = account if account else "(missing)"  # the reason names what was asked for
        assert any(f"account '{shown}'" in r for r in decision.reasons), decision.reasons
