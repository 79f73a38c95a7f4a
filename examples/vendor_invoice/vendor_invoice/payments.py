"""The accounts-payable side effect: a payment row in the extension's own table.

``pay_invoice`` and ``void_payment`` run inside the transaction Baton opened for the governed
step, so the payment, policy's decision and the audit rows commit together, or not at all.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

METADATA = sa.MetaData()
PAYMENTS = sa.Table(
    "ap_payment",
    METADATA,
    sa.Column("payment_id", sa.String, primary_key=True),
    sa.Column("invoice_id", sa.String, nullable=False, unique=True),
    sa.Column("vendor", sa.String, nullable=False),
    sa.Column("amount", sa.String, nullable=False),
    sa.Column("currency", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),  # paid | voided
    sa.Column("approved_by", sa.String, nullable=True),
)
#: vendors accounts payable will not pay (the policy reads this fact)
BLOCKED = sa.Table(
    "ap_blocked_vendor",
    METADATA,
    sa.Column("vendor", sa.String, primary_key=True),
    sa.Column("reason", sa.String, nullable=False),
)


class PaymentRequest(BaseModel):
    invoice_id: str = Field(min_length=1, max_length=64)
    vendor: str = Field(min_length=1, max_length=120)
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    purchase_order: str = Field(min_length=1, max_length=64)


class Payment(BaseModel):
    payment_id: str
    invoice_id: str
    status: str


def payment_facts(args: PaymentRequest, ctx: Any) -> dict[str, Any]:
    """What policy sees besides the arguments, read in the payment's own transaction."""
    METADATA.create_all(ctx.connection, checkfirst=True)
    blocked = ctx.connection.execute(
        sa.select(BLOCKED.c.reason).where(BLOCKED.c.vendor == args.vendor)
    ).scalar()
    paid = ctx.connection.execute(
        sa.select(PAYMENTS.c.payment_id).where(
            PAYMENTS.c.invoice_id == args.invoice_id, PAYMENTS.c.status == "paid"
        )
    ).scalar()
    return {"vendor_blocked": blocked, "already_paid": paid is not None}


def pay_invoice(args: PaymentRequest, ctx: Any) -> Payment:
    payment_id = f"PAY-{uuid.uuid4().hex[:10]}"
    approved_by = ", ".join(ctx.approval.approvers) if ctx.approval else None
    ctx.connection.execute(
        PAYMENTS.insert().values(
            payment_id=payment_id,
            invoice_id=args.invoice_id,
            vendor=args.vendor,
            amount=str(args.amount),
            currency=args.currency,
            status="paid",
            approved_by=approved_by,
        )
    )
    return Payment(payment_id=payment_id, invoice_id=args.invoice_id, status="paid")


def void_payment(args: PaymentRequest, result: Payment, ctx: Any) -> None:
    ctx.connection.execute(
        PAYMENTS.update().where(PAYMENTS.c.payment_id == result.payment_id).values(status="voided")
    )
