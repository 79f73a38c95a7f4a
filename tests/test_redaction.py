"""Redaction (activities/redaction.py): every kind with positives and near-miss negatives, the
counts, and documents with fields that must be sent verbatim."""

from __future__ import annotations

import pytest

from activities.redaction import (
    ORDER,
    RedactionError,
    iban_valid,
    luhn_valid,
    redact,
    redact_document,
)
from activities.seed import PII_SAMPLES
from workflows.contracts import REDACTION_KINDS

ALL = list(REDACTION_KINDS)

POSITIVES: list[tuple[str, str, str]] = [
    # (kind, text, masked text)
    ("email", "write to jane.doe@example.com today", "write to [email] today"),
    ("email", "<A.B+tag@mail.example.co.uk>", "<[email]>"),
    ("email", "mailto:ap@adatum.example", "mailto:[email]"),
    ("phone", "call +44 20 7946 0958.", "call [phone]."),
    ("phone", "+1 (555) 123-4567", "[phone]"),
    ("phone", "+1-555-123-4567", "[phone]"),
    ("phone", "+49-30-1234567", "[phone]"),
    ("phone", "+442079460958", "[phone]"),
    ("phone", "(555) 123-4567", "[phone]"),
    ("phone", "555-123-4567 or 555.123.4567", "[phone] or [phone]"),
    ("phone", "020 7946 0958", "[phone]"),
    ("phone", "mobile 07700 900123", "mobile [phone]"),
    ("phone", "Tel: 02079460958", "Tel: [phone]"),
    ("phone", "fax 5551234567", "fax [phone]"),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 32 for the refund", "IBAN [iban] for the refund"),
    ("iban", "GB82WEST12345698765432.", "[iban]."),
    ("iban", "to de89 3704 0044 0532 0130 00", "to [iban]"),
    ("iban", "NO9386011117947 and FR1420041010050500013M02606", "[iban] and [iban]"),
    ("card", "card 4111 1111 1111 1111 exp 05/27", "card [card] exp 05/27"),
    ("card", "4111-1111-1111-1111", "[card]"),
    ("card", "visa 4111111111111111", "visa [card]"),
    ("card", "amex 3782 822463 10005", "amex [card]"),
    ("card", "card 4111 1111 1111 1111 05 27", "card [card] 05 27"),
    ("card", "mastercard 5555555555554444", "mastercard [card]"),
    ("national_id", "SSN 078-05-1120", "SSN [national_id]"),
    ("national_id", "ssn 078 05 1120", "ssn [national_id]"),
    ("national_id", "SSN: 078051120", "SSN: [national_id]"),
    ("national_id", "NI number AB 12 34 56 C", "NI number [national_id]"),
    ("national_id", "nino JG103759A", "nino [national_id]"),
]

# Near misses: left exactly as they are, whatever kinds are asked for.
NEGATIVES: list[str] = [
    "user@localhost",
    "follow @acme on social",
    "name (at) example.com",
    "4111 1111 1111 1112",  # 16 digits failing Luhn
    "ref 1234567812345678",  # a 16-digit reference failing Luhn
    "INV-4111111111111111",  # glued to a reference prefix
    "GB82 WEST 1234 5698 7654 33",  # IBAN with a wrong check digit
    "GB82 WEST 1234 5698 7654",  # too short for GB
    "XX82WEST12345698765432",  # not a registry country
    "INV-202610-0042",  # an invoice reference is not a phone number
    "PAY-202610-0117 and INV-202610-MK0",
    "booked 2026-10-30, value date 2026-11-02",
    "amounts -1845000.00, 75000.00, +250.00 and 12.50",
    "Cash deposit branch 0042",
    "ADJ-B0042, ADJ-DUP-L0042, L0042, B0001",
    "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",  # not SSNs
    "QQ123456C",  # QQ is never issued
    "GB123456A",  # GB is never a NI prefix
    "AB123456E",  # NI suffixes are A-D
    "123456789",  # nine bare digits without "SSN"
    "phone 12 invoices",
    "12:30:45",
    "3.14159265358979323",  # a decimal, not a card
    "finance-close/acme/2101-10/act/7/policy/3",
    "revision 8f3a1c2b9d4e",
    "6100-bank-fees 7100-interest-income 1200-accounts-receivable",
]


@pytest.mark.parametrize(("kind", "text", "expected"), POSITIVES)
def test_each_kind_is_found_and_masked(kind: str, text: str, expected: str) -> None:
    masked, counts = redact(text, [kind])
    assert masked == expected
    assert counts == {kind: expected.count(f"[{kind}]")}
    # with every kind asked for, it is still masked as this kind
    masked_all, counts_all = redact(text, ALL)
    assert masked_all == expected
    assert counts_all == {kind: expected.count(f"[{kind}]")}


@pytest.mark.parametrize("text", NEGATIVES)
def test_near_misses_stay(text: str) -> None:
    assert redact(text, ALL) == (text, {})


def test_only_the_asked_kinds_are_masked() -> None:
    text = "jane.doe@example.com, +44 20 7946 0958"
    assert redact(text, ["phone"]) == ("jane.doe@example.com, [phone]", {"phone": 1})
    assert redact(text, []) == (text, {})


def test_counts_per_kind_and_values_never_returned() -> None:
    text = (
        "Refund to a@example.com and b@example.org, IBAN GB82 WEST 1234 5698 7654 32, "
        "card 4111 1111 1111 1111, tel +44 20 7946 0958, SSN 078-05-1120, NI AB 12 34 56 C"
    )
    masked, counts = redact(text, ALL)
    assert counts == {"email": 2, "iban": 1, "card": 1, "phone": 1, "national_id": 2}
    assert masked == (
        "Refund to [email] and [email], IBAN [iban], card [card], tel [phone], "
        "SSN [national_id], NI [national_id]"
    )
    # an IBAN's digits are never also counted as a card or a phone
    assert redact("GB82 WEST 1234 5698 7654 32", ALL)[1] == {"iban": 1}


def test_every_seeded_sample_is_masked() -> None:
    for name, value in PII_SAMPLES.items():
        masked, counts = redact(f"memo {value} end", ALL)
        assert value not in masked and sum(counts.values()) == 1, name


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(RedactionError, match="unknown redaction kind"):
        redact("x", ["passport"])


def test_checks() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert luhn_valid("79927398713")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("de89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82-WEST-1234")
    assert sorted(ORDER) == sorted(REDACTION_KINDS)


def test_documents_redact_free_text_and_keep_ids() -> None:
    document = {
        "tenant": "acme",
        "unmatched_bank": [
            {
                "line_id": "B0042",
                "amount": "-12.50",
                "reference": "FEE-0",
                "memo": "Refund to jane.doe@example.com",
            }
        ],
        "source_ids": ["B0042", "L0001"],
        "comment": "call +44 20 7946 0958",
        "count": 3,
        "flag": None,
    }
    redacted, counts = redact_document(
        document, ALL, verbatim=frozenset({"tenant", "line_id", "amount", "source_ids"})
    )
    assert redacted == {
        "tenant": "acme",
        "unmatched_bank": [
            {
                "line_id": "B0042",
                "amount": "-12.50",
                "reference": "FEE-0",
                "memo": "Refund to [email]",
            }
        ],
        "source_ids": ["B0042", "L0001"],
        "comment": "call [phone]",
        "count": 3,
        "flag": None,
    }
    assert counts == {"email": 1, "phone": 1}
    assert document["comment"] == "call +44 20 7946 0958"  # the input is not changed


def test_personal_data_in_a_verbatim_field_is_refused_naming_the_field_only() -> None:
    document = {"entries": [{"entry_id": "jane.doe@example.com", "memo": "x"}]}
    with pytest.raises(RedactionError) as caught:
        redact_document(document, ALL, verbatim=frozenset({"entry_id"}))
    message = str(caught.value)
    assert "input.entries[0].entry_id" in message and "email" in message
    assert "jane.doe" not in message
    with pytest.raises(RedactionError, match="the key"):
        redact_document({"jane.doe@example.com": 1}, ALL)
