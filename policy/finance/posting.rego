# Decides whether ONE adjusting journal entry may be posted to the ledger, and who must approve it
# first. Queried by the posting gate as data.baton.finance.posting.decision.
#
# Input (built by the finance-close workflow):
#   {"action": "post_journal_entry", "tenant": "acme",
#    "period": {"id": "2026-10", "status": "open"},
#    "entry": {"entry_id": "ADJ-B0042", "account": "6100-bank-fees", "amount": -12.5,
#              "source_ids": ["B0042"]},
#    "preparer": "agent:reconciler", "requested_by": "alice", "compliance_flagged": false,
#    "approval": null | {"approver": "carol", "request_id": "...", "action_digest": "..."}}
#
# Fail closed: every check is written as "deny unless a positive rule holds", so a missing or
# mistyped field denies instead of slipping through as undefined.
package baton.finance.posting

import data.baton.lib
import rego.v1

limits := data.baton.finance.limits

# The one document callers read. `allow` is a strict boolean over `deny` alone; approval
# requirements are reported separately, and the gate turns them into a require_approval verdict.
decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": sort(required_roles),
	"eligible_approvers": eligible_approvers,
}

entry_id := lib.input_text(["entry", "entry_id"])

# ---------------------------------------------------------------------------------------------
# Facts about the input. Each is a zero-argument rule, so `not fact` means the same on every
# engine (see policy/lib/lib.rego).
# ---------------------------------------------------------------------------------------------

action_known if input.action == "post_journal_entry"

tenant_known if is_object(data.baton.tenants[input.tenant])

period_open if input.period.status == "open"

account_allowed if input.entry.account in limits.allowed_accounts

amount_valid if is_number(input.entry.amount)

requester_named if lib.named(input.requested_by)

preparer_named if lib.named(input.preparer)

limits_configured if {
	is_number(limits.hard_cap)
	is_number(limits.approval_threshold)
	is_number(limits.cfo_threshold)
	is_array(limits.allowed_accounts)
}

# The size of the entry, whatever its direction (undefined when the amount is not a number).
magnitude := abs(input.entry.amount) if amount_valid

# Anything but a literal false (missing, null, "no") counts as flagged: fail closed.
compliance_cleared if input.compliance_flagged == false

flagged if not compliance_cleared

# An approval is attached when `approval` is an object; null or missing means none.
approval_attached if is_object(input.approval)

approver := input.approval.approver if {
	approval_attached
	lib.named(input.approval.approver)
}

# The approval must name the exact action the approver reviewed (checked against the action by
# the posting activity); an approval without a digest could be replayed onto another entry.
approval_bound if lib.named(input.approval.action_digest)

approval_problems := lib.approver_problems(
	approver,
	lib.input_string(["requested_by"]),
	lib.input_string(["preparer"]),
	required_roles,
)

valid_approval if {
	approval_bound
	count(approval_problems) == 0
}

# ---------------------------------------------------------------------------------------------
# Who must approve. Any one of the required roles suffices.
# ---------------------------------------------------------------------------------------------

cfo_required if magnitude >= limits.cfo_threshold

controller_required_by_amount if {
	magnitude >= limits.approval_threshold
	not cfo_required
}

required_roles contains "cfo" if cfo_required

required_roles contains "finance-controller" if controller_required_by_amount

# A compliance flag needs at least a finance-controller; a cfo-level entry already has more.
required_roles contains "finance-controller" if {
	flagged
	not cfo_required
}

# The requester and the preparer can never approve their own entry, so they are not offered.
excluded := {person |
	some field in ["requested_by", "preparer"]
	person := input[field]
}

eligible_approvers := lib.eligible_approvers(required_roles, excluded)

roles_text := concat(" or ", sort(required_roles))

# ---------------------------------------------------------------------------------------------
# deny: any one of these stops the posting, approval or not.
# ---------------------------------------------------------------------------------------------

deny contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy only decides 'post_journal_entry'", [
		lib.input_text(["action"]),
	])
}

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

deny contains msg if {
	not period_open
	msg := sprintf("period %s is not open (status '%s'): nothing can be posted to it", [
		lib.input_text(["period", "id"]),
		lib.input_text(["period", "status"]),
	])
}

deny contains msg if {
	not limits_configured
	msg := concat("", [
		"policy data is incomplete: data.baton.finance.limits needs numbers hard_cap, ",
		"approval_threshold and cfo_threshold and a list allowed_accounts",
	])
}

deny contains msg if {
	not account_allowed
	msg := sprintf("account '%s' on entry %s is not an allowed account for adjusting entries", [
		lib.input_text(["entry", "account"]),
		entry_id,
	])
}

deny contains msg if {
	not amount_valid
	msg := sprintf("entry %s has no numeric amount (amounts are JSON numbers, not strings)", [entry_id])
}

deny contains msg if {
	magnitude > limits.hard_cap
	msg := sprintf("amount %s on entry %s exceeds the hard cap of %s", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.hard_cap),
	])
}

deny contains "the request does not name who requested it (requested_by)" if not requester_named

deny contains "the request does not name who prepared the entry (preparer)" if not preparer_named

deny contains "an approval is attached but names no approver" if {
	approval_attached
	not approver
}

deny contains msg if {
	approval_attached
	not approval_bound
	msg := sprintf("the approval attached to entry %s is not bound to an action digest", [entry_id])
}

deny contains reason if some reason in approval_problems

# ---------------------------------------------------------------------------------------------
# require_approval: reported only while no valid approval is attached.
# ---------------------------------------------------------------------------------------------

require_approval contains msg if {
	not valid_approval
	cfo_required
	msg := sprintf("amount %s on entry %s is at or above the CFO threshold of %s: a cfo must approve it", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.cfo_threshold),
	])
}

require_approval contains msg if {
	not valid_approval
	controller_required_by_amount
	msg := sprintf("amount %s on entry %s is at or above the approval threshold of %s: a finance-controller must approve it", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.approval_threshold),
	])
}

require_approval contains msg if {
	not valid_approval
	flagged
	msg := sprintf("compliance flagged entry %s: a %s must review it before it is posted", [
		entry_id,
		roles_text,
	])
}
