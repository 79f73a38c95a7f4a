# Decides whether ONE adjusting journal entry may be posted to the ledger, and who must approve it
# first. Queried by the posting gate as data.baton.finance.posting.decision.
#
# Input (built by activities/finance.py posting_policy_input):
#   {"action": "post_journal_entry", "tenant": "acme",
#    "period": {"id": "2026-10", "status": "open"},
#    "entry": {"entry_id": "ADJ-B0042", "account": "6100-bank-fees", "amount": -12.5,
#              "source_ids": ["B0042"]},
#    "preparer": "agent:reconciler", "requested_by": "alice", "compliance_flagged": false,
#    "amended_by": null | "carol",
#    "approval": null | {"request_id": "...", "action_digest": "...",
#                        "approvers": ["carol", "dave"], "escalation_level": 0}}
#
# Approvals are N-of-M: `required_approvals` lists slots ({"role", "count"}), each filled by a
# different person holding the role. When an approval's SLA passes the workflow escalates along
# data.baton.finance.escalation; at escalation level k the roles of tiers 1..k may fill any open
# slot. The requester, the preparer and whoever amended the entry never approve it.
#
# Fail closed: every check is written as "deny unless a positive rule holds", so a missing or
# mistyped field denies instead of slipping through as undefined.
package baton.finance.posting

import data.baton.lib
import rego.v1

limits := data.baton.finance.limits

# The escalation chain: [{"roles": [...], "sla_seconds": n}, ...], tier 1 first.
chain := data.baton.finance.escalation

# The one document callers read. `allow` is a strict boolean over `deny` alone; approval
# requirements are reported separately, and the gate turns them into a require_approval verdict.
#
# Speed: the approval obligations (who may approve, the escalation chain, the candidates) are
# computed only when the entry needs an approval; every other decision answers them with the
# empty values they would have anyway, without looking at the directory.
decision := {
	"allow": true,
	"deny": [],
	"require_approval": [],
	"approver_roles": [],
	"eligible_approvers": [],
	"required_approvals": [],
	"escalation": [],
	"candidates": {},
} if {
	small_and_clean
} else := object.union(verdict, approval_obligations) if {
	approval_required
} else := object.union(verdict, no_obligations)

verdict := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
}

approval_obligations := {
	"approver_roles": sort(required_roles),
	"eligible_approvers": eligible_approvers,
	"required_approvals": required_approvals,
	"escalation": escalation,
	"candidates": candidates,
}

no_obligations := {
	"approver_roles": [],
	"eligible_approvers": [],
	"required_approvals": [],
	"escalation": [],
	"candidates": {},
}

entry_id := lib.input_text(["entry", "entry_id"])

# ---------------------------------------------------------------------------------------------
# The fast path. Most postings are clean: a known tenant, an open period, an allowed account, an
# amount below the approval threshold, no approval attached. `clean` checks exactly the facts
# whose absence `problems` reports, in one rule body, so such a posting is decided without
# evaluating the dozen deny rules one by one; anything else takes the detailed rules below,
# which say what is wrong. `deny` and `problems` are the same set on every input (the policy
# tests check this for every case).
# ---------------------------------------------------------------------------------------------

deny := set() if clean else := problems

require_approval := set() if small_and_clean else := approval_reasons

# Clean, below both thresholds (whatever their order in the data) and not flagged: no approval.
small_and_clean if {
	clean
	magnitude < limits.approval_threshold
	magnitude < limits.cfo_threshold
	compliance_cleared
}

clean if {
	action_known
	period_open
	tenant_known
	limits_configured
	escalation_configured
	account_allowed
	magnitude <= limits.hard_cap
	requester_named
	preparer_named
	amender_valid
	not approval_attached
}

# ---------------------------------------------------------------------------------------------
# Facts about the input. Each is a zero-argument rule, so `not fact` means the same on every
# engine (see policy/lib/lib.rego).
# ---------------------------------------------------------------------------------------------

action_known if input.action == "post_journal_entry"

tenant_known if is_object(data.baton.tenants[input.tenant])

period_open if input.period.status == "open"

account_allowed if input.entry.account in limits.allowed_accounts

amount_valid if is_number(input.entry.amount)

requester_named if {
	is_string(input.requested_by)
	input.requested_by != ""
}

preparer_named if {
	is_string(input.preparer)
	input.preparer != ""
}

# amended_by is null, missing, "" (nobody amended the entry) or the amender's name.
amender_valid if object.get(input, "amended_by", null) == null

amender_valid if is_string(input.amended_by)

limits_configured if {
	is_number(limits.hard_cap)
	is_number(limits.approval_threshold)
	is_number(limits.cfo_threshold)
	is_array(limits.allowed_accounts)
}

# The chain is checked once per bundle revision, not on every decision: the embedded engine
# evaluates `data_checks` when it loads the policies and keeps each value that passed under
# data.baton_verified (activities/policy.py, "verified data"). A chain equal to the verified one
# is well-formed; any other (a `with` in a test, an engine without the copy) is checked in full.
escalation_configured if chain == data.baton_verified.finance_escalation

escalation_configured if escalation_shape_valid

data_checks["finance_escalation"] := chain if escalation_shape_valid

escalation_shape_valid if {
	is_array(chain)
	every tier in chain {
		is_array(tier.roles)
		count(tier.roles) > 0
		every role in tier.roles {
			is_string(role)
			role != ""
		}
		is_number(tier.sla_seconds)
		tier.sla_seconds == floor(tier.sla_seconds)
		tier.sla_seconds >= 1
	}
}

# The chain when it is well-formed, else none (and a deny below).
default tiers := []

tiers := chain if escalation_configured

# The size of the entry, whatever its direction (undefined when the amount is not a number).
magnitude := abs(input.entry.amount) if amount_valid

# Anything but a literal false (missing, null, "no") counts as flagged: fail closed.
compliance_cleared if input.compliance_flagged == false

flagged if not compliance_cleared

# ---------------------------------------------------------------------------------------------
# Who must approve: slots of distinct people.
# ---------------------------------------------------------------------------------------------

cfo_required if magnitude >= limits.cfo_threshold

controller_required_by_amount if {
	magnitude >= limits.approval_threshold
	not cfo_required
}

controller_required if controller_required_by_amount

# A compliance flag needs at least a finance-controller; a cfo-level entry already has one.
controller_required if flagged

# role -> how many distinct people holding it must approve. A cfo-level entry needs a
# finance-controller AND a cfo: two people, even when one person holds both roles.
requirements := {"cfo": 1, "finance-controller": 1} if {
	cfo_required
} else := {"finance-controller": 1} if {
	controller_required
} else := {}

required_roles := {role | some role, _ in requirements}

approval_required if count(requirements) > 0

required_approvals := [{"role": role, "count": requirements[role]} | some role in sort(required_roles)]

# The escalation chain the workflow follows while the approval is pending.
escalation := [{"roles": tier.roles, "sla_seconds": tier.sla_seconds} |
	approval_required
	some tier in tiers
]

escalation_roles := {role | some tier in escalation; some role in tier.roles}

# The requester, the preparer and the amender never approve their own entry, so they are not
# offered.
excluded := {person |
	some field in ["requested_by", "preparer", "amended_by"]
	person := input[field]
	lib.named(person)
}

# role -> who may fill it (for every required and escalation role); the workflow's update
# validator decides from this without I/O.
candidate_roles := required_roles | escalation_roles

candidates := {role: lib.eligible_approvers({role}, excluded) | some role in candidate_roles}

eligible_approvers := lib.eligible_approvers(required_roles, excluded)

roles_text := concat(" and ", [sprintf("a %s", [role]) | some role in sort(required_roles)])

# ---------------------------------------------------------------------------------------------
# The attached approval
# ---------------------------------------------------------------------------------------------

# An approval is attached when `approval` is an object; null or missing means none.
approval_attached if is_object(input.approval)

# The approval must name the exact action the approver reviewed (checked against the action by
# the posting activity); an approval without a digest could be replayed onto another entry.
approval_bound if lib.named(input.approval.action_digest)

approvers_listed if {
	is_array(input.approval.approvers)
	count(input.approval.approvers) > 0
	every person in input.approval.approvers {
		lib.named(person)
	}
}

# Everyone the approval names (each is checked, even when the list also holds junk).
approvers := {person |
	approval_attached
	is_array(input.approval.approvers)
	some person in input.approval.approvers
	lib.named(person)
}

duplicated := {person |
	some person in approvers
	count([i | some i, other in input.approval.approvers; other == person]) > 1
}

level_valid if {
	lib.whole_number(input.approval.escalation_level)
	input.approval.escalation_level <= count(tiers)
}

# The escalation level the approval completed at; 0 (required roles only) when it is invalid.
default level := 0

level := input.approval.escalation_level if level_valid

# Roles of the escalation tiers entered so far: their holders may fill any open slot.
any_slot_roles := lib.escalation_roles(tiers, level)

approval_problems := {reason |
	some person in approvers
	some reason in lib.approver_problems(
		person,
		lib.input_string(["requested_by"]),
		lib.input_string(["preparer"]),
		lib.input_string(["amended_by"]),
		lib.roles_allowed_at(requirements, tiers, level),
	)
}

# Every approver may approve on their own; whether they are enough is checked next.
approval_sound if {
	approval_bound
	approvers_listed
	count(duplicated) == 0
	level_valid
	count(approval_problems) == 0
}

valid_approval if {
	approval_sound
	lib.slots_filled(requirements, approvers, any_slot_roles)
}

# ---------------------------------------------------------------------------------------------
# deny: any one of these stops the posting, approval or not.
# ---------------------------------------------------------------------------------------------

problems contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy only decides 'post_journal_entry'", [
		lib.input_text(["action"]),
	])
}

problems contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

problems contains msg if {
	not period_open
	msg := sprintf("period %s is not open (status '%s'): nothing can be posted to it", [
		lib.input_text(["period", "id"]),
		lib.input_text(["period", "status"]),
	])
}

problems contains msg if {
	not limits_configured
	msg := concat("", [
		"policy data is incomplete: data.baton.finance.limits needs numbers hard_cap, ",
		"approval_threshold and cfo_threshold and a list allowed_accounts",
	])
}

problems contains msg if {
	not escalation_configured
	msg := concat("", [
		"policy data is incomplete: data.baton.finance.escalation must be a list of tiers, ",
		"each with a non-empty list of roles and a whole number sla_seconds >= 1",
	])
}

problems contains msg if {
	not account_allowed
	msg := sprintf("account '%s' on entry %s is not an allowed account for adjusting entries", [
		lib.input_text(["entry", "account"]),
		entry_id,
	])
}

problems contains msg if {
	not amount_valid
	msg := sprintf("entry %s has no numeric amount (amounts are JSON numbers, not strings)", [entry_id])
}

problems contains msg if {
	magnitude > limits.hard_cap
	msg := sprintf("amount %s on entry %s exceeds the hard cap of %s", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.hard_cap),
	])
}

problems contains "the request does not name who requested it (requested_by)" if not requester_named

problems contains "the request does not name who prepared the entry (preparer)" if not preparer_named

problems contains msg if {
	not amender_valid
	msg := sprintf("amended_by on entry %s must name who amended it, or be null", [entry_id])
}

problems contains msg if {
	approval_attached
	not approvers_listed
	msg := sprintf("the approval attached to entry %s must list its approvers: a non-empty list of names", [entry_id])
}

problems contains msg if {
	some person in duplicated
	msg := sprintf("%s is counted twice in the approval of entry %s: approvers must be different people", [
		person,
		entry_id,
	])
}

problems contains msg if {
	approval_attached
	not approval_bound
	msg := sprintf("the approval attached to entry %s is not bound to an action digest", [entry_id])
}

problems contains msg if {
	approval_attached
	not level_valid
	msg := sprintf("the approval attached to entry %s has an invalid escalation_level: it must be a whole number from 0 to %d (the tiers of the escalation chain)", [
		entry_id,
		count(tiers),
	])
}

problems contains reason if some reason in approval_problems

# ---------------------------------------------------------------------------------------------
# require_approval: reported only while no valid approval is attached.
# ---------------------------------------------------------------------------------------------

approval_reasons contains msg if {
	not valid_approval
	cfo_required
	msg := sprintf("amount %s on entry %s is at or above the CFO threshold of %s: a cfo and a finance-controller (two different people) must approve it", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.cfo_threshold),
	])
}

approval_reasons contains msg if {
	not valid_approval
	controller_required_by_amount
	msg := sprintf("amount %s on entry %s is at or above the approval threshold of %s: a finance-controller must approve it", [
		lib.money(input.entry.amount),
		entry_id,
		lib.money(limits.approval_threshold),
	])
}

approval_reasons contains msg if {
	not valid_approval
	flagged
	msg := sprintf("compliance flagged entry %s: %s must review it before it is posted", [
		entry_id,
		roles_text,
	])
}

# Sound approvals that do not fill every slot yet: say what is still missing.
approval_reasons contains msg if {
	approval_sound
	some gap in lib.missing_approvals(requirements, approvers, any_slot_roles)
	msg := sprintf("entry %s is not fully approved yet (approved so far by %s): %s", [
		entry_id,
		concat(", ", sort(approvers)),
		lib.missing_text(gap, any_slot_roles),
	])
}
