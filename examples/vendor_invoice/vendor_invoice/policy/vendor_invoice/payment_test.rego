package vendor_invoice.payment_test

import data.vendor_invoice.payment
import rego.v1

base := {
	"action": "ap.pay_invoice", "tenant": "acme", "requested_by": "alice",
	"args": {"invoice_id": "INV-1", "vendor": "Acme Paper", "amount": "120.00", "currency": "EUR", "purchase_order": "PO-7"},
	"facts": {"vendor_blocked": null, "already_paid": false},
	"approval": null,
}

test_small_payment_allowed if {
	d := payment.decision with input as base
	d.allow
	count(d.require_approval) == 0
}

test_large_payment_needs_controller if {
	d := payment.decision with input as object.union(base, {"args": object.union(base.args, {"amount": "7000.00"})})
	d.allow
	d.candidates["finance-controller"] == ["carol", "dave", "frank"]
}

test_blocked_vendor_denied if {
	d := payment.decision with input as object.union(base, {"facts": {"vendor_blocked": "sanctions list", "already_paid": false}})
	not d.allow
}
