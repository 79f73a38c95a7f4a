"""Vendor invoice approval: a Baton extension written without touching Baton.

``register(registry)`` is the entry point (pyproject.toml, group ``baton.extensions``): it
declares the governed action ``ap.pay_invoice`` (with its undo), the agent ``ap.check_invoice``,
the Rego policy directory and the YAML process ``vendor_invoice``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vendor_invoice.agent import CHECK_PROMPT, InvoiceCheck, InvoiceToCheck, check_meaning, stand_in
from vendor_invoice.payments import (
    Payment,
    PaymentRequest,
    pay_invoice,
    payment_facts,
    void_payment,
)

HERE = Path(__file__).parent

__all__ = ["register"]


def register(registry: Any) -> None:
    """What this extension adds to Baton."""
    registry.policies(HERE / "policy")
    registry.action(
        "ap.pay_invoice",
        args=PaymentRequest,
        result=Payment,
        policy="vendor_invoice/payment",
        run=pay_invoice,
        compensate=void_payment,
        facts=payment_facts,
        description="pay a vendor invoice (accounts payable) if policy allows it now",
    )
    registry.agent(
        "ap.check_invoice",
        role="invoice_checker",
        prompt=CHECK_PROMPT,
        input=InvoiceToCheck,
        answer=InvoiceCheck,
        check=check_meaning,
        task_class="review",
        description="invoice checker (LLM): does the invoice match its purchase order?",
        stand_in=stand_in,
    )
    registry.yaml_process(HERE / "vendor_invoice.yaml")
