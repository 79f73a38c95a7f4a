"""The invoice checker: does an invoice match its purchase order?"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

CHECK_PROMPT = """agent: invoice_checker
You check a vendor invoice against its purchase order for accounts payable.
Answer with JSON: {"invoice_id": the invoice's id, "verdict": "match" | "mismatch",
"amount_to_pay": the amount to pay as a decimal string, "reasons": [short reasons]}.
Pay at most the purchase order's amount. Say "mismatch" when the vendor differs.
"""


class InvoiceToCheck(BaseModel):
    tenant: str  # the base policy checks the tenant may use the model
    invoice_id: str
    vendor: str
    amount: Decimal
    purchase_order: str
    po_vendor: str
    po_amount: Decimal


class InvoiceCheck(BaseModel):
    invoice_id: str
    verdict: Literal["match", "mismatch"]
    amount_to_pay: Decimal = Field(ge=0)
    reasons: list[str] = Field(default_factory=list)


def check_meaning(answer: InvoiceCheck, inp: InvoiceToCheck) -> list[str]:
    """Problems with the answer's meaning (empty: fine): it must name the invoice it was
    given and never pay more than the purchase order."""
    problems = []
    if answer.invoice_id != inp.invoice_id:
        problems.append(f"invoice_id must be {inp.invoice_id!r}, not {answer.invoice_id!r}")
    if answer.amount_to_pay > inp.po_amount:
        problems.append(f"amount_to_pay {answer.amount_to_pay} exceeds the PO's {inp.po_amount}")
    return problems


def stand_in(payload: dict[str, Any]) -> dict[str, Any]:
    """The local stand-in model server's answer (a rule, not a model)."""
    amount, po = Decimal(str(payload["amount"])), Decimal(str(payload["po_amount"]))
    same_vendor = payload["vendor"] == payload["po_vendor"]
    return {
        "invoice_id": payload["invoice_id"],
        "verdict": "match" if same_vendor and amount <= po else "mismatch",
        "amount_to_pay": str(min(amount, po)),
        "reasons": [] if same_vendor else ["vendor differs from the purchase order"],
    }
