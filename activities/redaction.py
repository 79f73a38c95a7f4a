"""Find and mask personal data in text before it leaves for a model endpoint.

``redact(text, kinds)`` returns the masked text and how many items of each kind were masked
(never the values). A masked item becomes ``[<kind>]``, e.g. ``[email]``. The kinds are the ones
the base policy's ``redact`` obligation names (``workflows.contracts.REDACTION_KINDS``):

``email``
    ``local@domain.tld``. Not: ``user@localhost``, ``@handle``, ``name (at) example.com``.
``iban``
    An ISO 13616 IBAN, in groups of four or in one run, upper or lower case: a country of the
    IBAN registry, that country's exact length, and the mod-97 check (remainder 1). A
    mistyped IBAN (wrong check digits) is left alone.
``card``
    A payment card number: 13-19 digits, in one run or in groups split by single spaces or
    dashes, passing the Luhn check. A 16-digit reference failing Luhn is left alone; inside a
    longer run of groups (``card 4111 1111 1111 1111 05 27``) the Luhn-valid groups are found.
``national_id``
    US Social Security numbers (``AAA-GG-SSSS`` with dashes or spaces; area not 000, 666 or
    900-999, group not 00, serial not 0000; nine bare digits only right after ``SSN``) and UK
    National Insurance numbers (``AB 12 34 56 C`` with or without spaces, upper case; the
    letters HMRC never issues are excluded, e.g. prefixes BG, GB, NK, KN, TN, NT, ZZ or a
    first letter D, F, I, Q, U, V). Other countries' ids are not detected.
``phone``
    International numbers (``+44 20 7946 0958``, ``+1-555-123-4567``: a ``+``, 8-15 digits in
    groups split by single spaces or dashes, an area code in parentheses allowed), North
    American numbers with separators (``555-123-4567``, ``(555) 123-4567``, ``555.123.4567``),
    national numbers with a trunk 0 and separators (``020 7946 0958``, ``07700 900123``), and any
    run of 7-15 digits right after ``tel``, ``phone``, ``mobile``, ``cell`` or ``fax``. A bare
    digit run is not a phone number: invoice and payment references (``INV-202610-0042``),
    dates, amounts and ids are left alone.

Kinds are masked in this order: email, iban, card, national_id, phone, so a number inside an
IBAN is never also counted as a card or a phone.

Must not: log or return the values it masks; be imported by workflows (it is not needed there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workflows.contracts import REDACTION_KINDS
from workflows.errors import BatonError

#: Masking order: a later detector never sees what an earlier one masked.
ORDER = ("email", "iban", "card", "national_id", "phone")
assert sorted(ORDER) == sorted(REDACTION_KINDS)


def mask(kind: str) -> str:
    """What a masked item of ``kind`` becomes."""
    return f"[{kind}]"


class RedactionError(BatonError):
    """Data that cannot be sent: an unknown kind, or personal data in a field kept verbatim."""


# ---------------------------------------------------------------------------------------------
# email
# ---------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> tuple[str, int]:
    return _EMAIL.subn(mask("email"), text)


# ---------------------------------------------------------------------------------------------
# iban
# ---------------------------------------------------------------------------------------------

#: IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")


def iban_valid(candidate: str) -> bool:
    """True for an IBAN (spaces allowed) of a registry country with its length and mod-97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not compact.isascii() or not compact.isalnum():
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_end(text: str, start: int, length: int) -> int | None:
    """Where an IBAN of ``length`` characters starting at ``start`` ends (single spaces may
    split it anywhere, as in groups of four), or None when the text there is not one."""
    taken, i = 0, start
    while taken < length and i < len(text):
        ch = text[i]
        if ch.isascii() and ch.isalnum():
            taken, i = taken + 1, i + 1
        elif ch == " " and 4 <= taken and i + 1 < len(text) and text[i + 1].isalnum():
            i += 1
        else:
            break
    if taken != length or (i < len(text) and text[i].isascii() and text[i].isalnum()):
        return None
    return i


def _ibans(text: str) -> tuple[str, int]:
    out: list[str] = []
    count, last, pos = 0, 0, 0
    while (m := _IBAN_START.search(text, pos)) is not None:
        length = IBAN_LENGTHS.get(m.group(1).upper())
        end = _iban_end(text, m.start(), length) if length else None
        if end is None or not iban_valid(text[m.start() : end]):
            pos = m.start() + 1
            continue
        out += [text[last : m.start()], mask("iban")]
        count, last, pos = count + 1, end, end
    out.append(text[last:])
    return "".join(out), count


# ---------------------------------------------------------------------------------------------
# card
# ---------------------------------------------------------------------------------------------

# A run of digit groups split by single spaces or dashes, not glued to a word, a reference
# (INV-2026...) or a decimal.
_DIGIT_RUN = re.compile(r"(?<![\w-])(?<!\d\.)\d+(?:[ -]\d+)*(?![\w-])")
_GROUP = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_shaped(run: str, groups: list[tuple[int, int]]) -> bool:
    """How card numbers are written: one run of digits, or a first group of four and further
    groups of three to six digits (4-4-4-4, Amex 4-6-5, 4-4-4-4-3) under ONE separator."""
    if len(groups) == 1:
        return True
    separators = {run[b] for (_, b), _next in zip(groups, groups[1:], strict=False)}
    sizes = [b - a for a, b in groups]
    return len(separators) == 1 and sizes[0] == 4 and all(3 <= n <= 6 for n in sizes[1:])


def _cards_in_run(run: str) -> list[tuple[int, int]]:
    """Spans (relative to ``run``) of card numbers made of whole consecutive groups, leftmost
    and longest first, not overlapping."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            digits = "".join(run[a:b] for a, b in groups[i : j + 1])
            if (
                13 <= len(digits) <= 19
                and _card_shaped(run, groups[i : j + 1])
                and luhn_valid(digits)
            ):
                spans.append((groups[i][0], groups[j][1]))
                i = j
                break
        i += 1
    return spans


def _cards(text: str) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        run = m.group(0)
        spans = _cards_in_run(run)
        if not spans:
            return run
        count += len(spans)
        out, last = [], 0
        for a, b in spans:
            out += [run[last:a], mask("card")]
            last = b
        out.append(run[last:])
        return "".join(out)

    return _DIGIT_RUN.sub(replace, text), count


# ---------------------------------------------------------------------------------------------
# national_id: US SSN, UK NI number
# ---------------------------------------------------------------------------------------------

_SSN = re.compile(
    r"(?<![\w.-])(?!000|666|9\d\d)\d{3}([ -])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])"
    r"|(?i:(?<=\bssn)|(?<=\bssn:)|(?<=\bssn )|(?<=\bssn: ))"
    r"(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}(?![\w-])"
)
_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"(?: ?\d{2}){3} ?[A-D](?![A-Za-z0-9])"
)


def _national_ids(text: str) -> tuple[str, int]:
    text, ssn = _SSN.subn(mask("national_id"), text)
    text, nino = _NINO.subn(mask("national_id"), text)
    return text, ssn + nino


# ---------------------------------------------------------------------------------------------
# phone
# ---------------------------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+.-])(?<!\d )"
    r"(?:"
    r"(?P<intl>\+\d{1,3}(?:[ -]?(?:\(\d{1,4}\)|\d{1,5})){1,6})"
    r"|(?P<nanp>(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})"
    r"|(?P<trunk>0\d{2,4}[ -]\d{3,4}(?:[ -]?\d{3,4})?)"
    r")"
    r"(?![\w-])(?![ .]\d)"
)
_PHONE_AFTER_WORD = re.compile(
    r"(?i:\b(?:tel|phone|mobile|cell|fax)\b\.?:?\s?)(?P<number>\+?\d(?:[ -]?\d){6,14})(?![\w-])"
)


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _phone_match(m: re.Match[str]) -> bool:
    digits = _digits(m.group(0))
    if m.group("intl"):
        return 8 <= digits <= 15
    if m.group("nanp"):
        return digits == 10
    return 10 <= digits <= 11


def _phones(text: str) -> tuple[str, int]:
    count = 0

    def shaped(m: re.Match[str]) -> str:
        nonlocal count
        if not _phone_match(m):
            return m.group(0)
        count += 1
        return mask("phone")

    def after_word(m: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return m.group(0)[: m.start("number") - m.start()] + mask("phone")

    text = _PHONE.sub(shaped, text)
    text = _PHONE_AFTER_WORD.sub(after_word, text)
    return text, count


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------

_DETECTORS: Mapping[str, Callable[[str], tuple[str, int]]] = {
    "email": _emails,
    "iban": _ibans,
    "card": _cards,
    "national_id": _national_ids,
    "phone": _phones,
}


def _wanted(kinds: Iterable[str]) -> set[str]:
    wanted = set(kinds)
    if unknown := sorted(wanted - set(ORDER)):
        raise RedactionError(
            f"unknown redaction kind(s) {unknown}: known are {', '.join(sorted(ORDER))}"
        )
    return wanted


def redact(text: str, kinds: Iterable[str]) -> tuple[str, dict[str, int]]:
    """``text`` with every item of ``kinds`` replaced by its mask, and how many were masked per
    kind (only kinds that occurred)."""
    wanted = _wanted(kinds)
    counts: dict[str, int] = {}
    for kind in ORDER:
        if kind in wanted:
            text, n = _DETECTORS[kind](text)
            if n:
                counts[kind] = n
    return text, counts


def redact_document(
    document: Any, kinds: Iterable[str], *, verbatim: frozenset[str] = frozenset()
) -> tuple[Any, dict[str, int]]:
    """A JSON document with every string value redacted, and the counts per kind.

    Values under a key in ``verbatim`` (identifiers the receiver must echo exactly, such as
    entry ids; a list under such a key too) are kept as they are, but checked: personal data
    there raises ``RedactionError`` naming the field (never the value) rather than being sent.
    Object keys are checked the same way.
    """
    wanted = _wanted(kinds)
    counts: dict[str, int] = {}

    def add(found: Mapping[str, int]) -> None:
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n

    def check(value: str, path: str) -> None:
        _, found = redact(value, wanted)
        if found:
            raise RedactionError(
                f"{path} must be sent verbatim but holds personal data "
                f"({', '.join(sorted(found))}): it cannot be redacted without breaking the answer"
            )

    def walk(value: Any, path: str, keep: bool) -> Any:
        if isinstance(value, str):
            if keep:
                check(value, path)
                return value
            masked, found = redact(value, wanted)
            add(found)
            return masked
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                check(str(key), f"{path}.{key} (the key)")
                out[key] = walk(item, f"{path}.{key}", keep or key in verbatim)
            return out
        if isinstance(value, list | tuple):
            return [walk(item, f"{path}[{i}]", keep) for i, item in enumerate(value)]
        return value

    return walk(document, "input", False), counts


__all__ = [
    "IBAN_LENGTHS",
    "ORDER",
    "RedactionError",
    "iban_valid",
    "luhn_valid",
    "mask",
    "redact",
    "redact_document",
]
