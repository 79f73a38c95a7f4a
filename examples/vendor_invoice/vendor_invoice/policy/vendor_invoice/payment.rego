# May accounts payable pay this vendor invoice now, and who must approve it first? Queried by
# the governed action ap.pay_invoice as data.vendor_invoice.payment.decision, in the payment's
# own transaction.
#
# Input (Baton's governed action, activities/extensions.py policy_input):
#   {"action": "ap.pay_invoice", "tenant": "acme", "requested_by": "alice",
#    "args": {"invoice_id": "INV-1", "vendor": "Acme Paper", "amount": "120.00",
#             "currency": "EUR", "purchase_order": "PO-7"},
#    "facts": {"vendor_blocked": null | "reason", "already_paid": false},
#    "approval": null | {"approvers": ["carol"], "matches_action": true, ...}}
#
# Fail closed: deny unless every positive rule holds.
package vendor_invoice.payment

import rego.v1

limits := data.vendor_invoice.limits

role := data.vendor_invoice.approver_role

amount := to_number(input.args.amount)

deny contains "unknown tenant" if not is_object(data.baton.tenants[input.tenant])

deny contains sprintf("vendor %s is blocked: %s", [input.args.vendor, input.facts.vendor_blocked]) if {
	is_string(input.facts.vendor_blocked)
}

deny contains sprintf("invoice %s is paid already", [input.args.invoice_id]) if {
	input.facts.already_paid == true
}

deny contains sprintf("amount %v is above the hard cap %v", [amount, limits.hard_cap]) if {
	amount > limits.hard_cap
}

deny contains "the approval is bound to another payment" if {
	input.approval != null
	not input.approval.matches_action
}

approved if {
	input.approval.matches_action == true
	some person in input.approval.approvers
	person != input.requested_by
	role in data.baton.directory.people[person].roles
}

require_approval contains sprintf("payments above %v need a %s", [limits.approval_above, role]) if {
	amount > limits.approval_above
	not approved
}

candidates := sort([person |
	some person, entry in data.baton.directory.people
	role in entry.roles
	person != input.requested_by
])

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": [role],
	"eligible_approvers": candidates,
	"required_approvals": [{"role": role, "count": 1}],
	"escalation": [],
	"candidates": {role: candidates},
} if count(require_approval) > 0 else := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": [],
}
