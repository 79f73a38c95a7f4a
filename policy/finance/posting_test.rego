# Unit tests for baton.finance.posting: every deny rule, every approval tier and its boundaries,
# approvals (valid, self-approval, wrong role) and the eligible-approver list. Run by
# `baton policy test` and by pytest on both OPA's evaluator and regorus.
package baton.finance.posting_test

import data.baton.finance.posting
import rego.v1

base := {
	"action": "post_journal_entry",
	"tenant": "acme",
	"period": {"id": "2026-10", "status": "open"},
	"entry": {
		"entry_id": "ADJ-B0042",
		"account": "6100-bank-fees",
		"amount": -12.5,
		"source_ids": ["B0042"],
	},
	"preparer": "agent:reconciler",
	"requested_by": "alice",
	"compliance_flagged": false,
	"approval": null,
}

# The base input with fields replaced (object.union merges nested objects; use json.remove to
# drop a nested field).
with_fields(fields) := object.union(base, fields)

# The base input with entry fields replaced.
with_entry(fields) := object.union(base, {"entry": object.union(base.entry, fields)})

with_amount(amount) := with_entry({"amount": amount})

# An entry of `amount` approved by `approver` (bound to an action digest, as the workflow sends it).
approved(amount, approver) := object.union(with_amount(amount), {"approval": {
	"approver": approver,
	"request_id": "apr-1",
	"action_digest": "sha256-of-the-action",
}})

decide(request) := d if {
	d := posting.decision with input as request
}

# ---------------------------------------------------------------------------------------------
# allow
# ---------------------------------------------------------------------------------------------

test_small_entry_is_allowed_without_approval if {
	d := decide(base)
	d.allow == true
	d.deny == []
	d.require_approval == []
	d.approver_roles == []
	d.eligible_approvers == []
}

test_allow_is_a_strict_boolean if {
	is_boolean(decide(base).allow)
	is_boolean(decide(with_fields({"tenant": "initech"})).allow)
	decide(with_fields({"tenant": "initech"})).allow == false
}

test_positive_amount_and_every_allowed_account_is_allowed if {
	every account in data.baton.finance.limits.allowed_accounts {
		decide(with_entry({"account": account, "amount": 250})).allow == true
	}
}

test_zero_amount_is_allowed if {
	d := decide(with_amount(0))
	d.allow == true
	d.require_approval == []
}

# ---------------------------------------------------------------------------------------------
# deny
# ---------------------------------------------------------------------------------------------

test_deny_closed_period if {
	d := decide(with_fields({"period": {"id": "2026-09", "status": "closed"}}))
	d.allow == false
	d.deny == ["period 2026-09 is not open (status 'closed'): nothing can be posted to it"]
}

test_deny_missing_period_status if {
	d := decide(json.remove(base, ["period/status"]))
	d.deny == ["period 2026-10 is not open (status '(missing)'): nothing can be posted to it"]
}

test_deny_account_not_allowed if {
	d := decide(with_entry({"account": "9999-director-bonus"}))
	d.allow == false
	d.deny == ["account '9999-director-bonus' on entry ADJ-B0042 is not an allowed account for adjusting entries"]
}

test_deny_missing_account if {
	d := decide(json.remove(base, ["entry/account"]))
	d.deny == ["account '(missing)' on entry ADJ-B0042 is not an allowed account for adjusting entries"]
}

test_deny_account_removed_from_data if {
	d := decide(base) with data.baton.finance.limits.allowed_accounts as ["1000-cash"]
	d.deny == ["account '6100-bank-fees' on entry ADJ-B0042 is not an allowed account for adjusting entries"]
}

test_deny_above_hard_cap if {
	d := decide(with_amount(-1000000.01))
	d.allow == false
	d.deny == ["amount -1000000.01 on entry ADJ-B0042 exceeds the hard cap of 1000000.00"]
}

test_hard_cap_itself_is_not_denied if {
	d := decide(with_amount(1000000))
	d.allow == true
	d.approver_roles == ["cfo"]
}

test_hard_cap_comes_from_data if {
	d := decide(with_amount(600)) with data.baton.finance.limits.hard_cap as 500
	d.deny == ["amount 600.00 on entry ADJ-B0042 exceeds the hard cap of 500.00"]
}

test_deny_amount_that_is_not_a_number if {
	d := decide(with_amount("12.50"))
	d.allow == false
	d.deny == ["entry ADJ-B0042 has no numeric amount (amounts are JSON numbers, not strings)"]
}

test_deny_unknown_action if {
	d := decide(with_fields({"action": "delete_ledger"}))
	d.allow == false
	d.deny == ["unknown action 'delete_ledger': this policy only decides 'post_journal_entry'"]
}

test_deny_missing_action if {
	d := decide(object.remove(base, ["action"]))
	d.deny == ["unknown action '(missing)': this policy only decides 'post_journal_entry'"]
}

test_deny_unknown_tenant if {
	d := decide(with_fields({"tenant": "initech"}))
	d.allow == false
	d.deny == ["unknown tenant 'initech': it is not listed in data.baton.tenants"]
}

test_deny_tenant_removed_from_data if {
	d := decide(base) with data.baton.tenants as {"globex": {"region": "us"}}
	d.deny == ["unknown tenant 'acme': it is not listed in data.baton.tenants"]
}

test_deny_when_limits_are_missing if {
	d := decide(base) with data.baton.finance.limits as {}
	d.allow == false
	some reason in d.deny
	startswith(reason, "policy data is incomplete: data.baton.finance.limits")
}

test_deny_missing_requester_and_preparer if {
	d := decide(object.remove(base, ["requested_by", "preparer"]))
	d.deny == [
		"the request does not name who prepared the entry (preparer)",
		"the request does not name who requested it (requested_by)",
	]
}

test_deny_empty_input_lists_every_problem if {
	d := decide({})
	d.allow == false
	count(d.deny) == 7
}

# ---------------------------------------------------------------------------------------------
# require_approval tiers and boundaries
# ---------------------------------------------------------------------------------------------

test_below_approval_threshold_needs_no_approval if {
	d := decide(with_amount(999.99))
	d.allow == true
	d.require_approval == []
	d.approver_roles == []
}

test_approval_threshold_needs_finance_controller if {
	d := decide(with_amount(1000))
	d.allow == true
	d.require_approval == ["amount 1000.00 on entry ADJ-B0042 is at or above the approval threshold of 1000.00: a finance-controller must approve it"]
	d.approver_roles == ["finance-controller"]
	d.eligible_approvers == ["carol", "dave", "frank"]
}

test_negative_amount_counts_by_size if {
	d := decide(with_amount(-1000))
	d.approver_roles == ["finance-controller"]
	d.require_approval == ["amount -1000.00 on entry ADJ-B0042 is at or above the approval threshold of 1000.00: a finance-controller must approve it"]
}

test_below_cfo_threshold_needs_finance_controller if {
	d := decide(with_amount(49999.99))
	d.approver_roles == ["finance-controller"]
	count(d.require_approval) == 1
}

test_cfo_threshold_needs_cfo_instead if {
	d := decide(with_amount(50000))
	d.allow == true
	d.require_approval == ["amount 50000.00 on entry ADJ-B0042 is at or above the CFO threshold of 50000.00: a cfo must approve it"]
	d.approver_roles == ["cfo"]
	d.eligible_approvers == ["dave"]
}

test_thresholds_come_from_data if {
	d := decide(with_amount(20)) with data.baton.finance.limits.approval_threshold as 10
		with data.baton.finance.limits.cfo_threshold as 15
	d.approver_roles == ["cfo"]
}

test_compliance_flag_needs_finance_controller if {
	d := decide(with_fields({"compliance_flagged": true}))
	d.allow == true
	d.require_approval == ["compliance flagged entry ADJ-B0042: a finance-controller must review it before it is posted"]
	d.approver_roles == ["finance-controller"]
}

test_compliance_flag_on_cfo_entry_keeps_cfo if {
	d := decide(object.union(with_amount(75000), {"compliance_flagged": true}))
	d.approver_roles == ["cfo"]
	d.require_approval == [
		"amount 75000.00 on entry ADJ-B0042 is at or above the CFO threshold of 50000.00: a cfo must approve it",
		"compliance flagged entry ADJ-B0042: a cfo must review it before it is posted",
	]
}

test_missing_compliance_flag_counts_as_flagged if {
	d := decide(object.remove(base, ["compliance_flagged"]))
	d.approver_roles == ["finance-controller"]
}

# ---------------------------------------------------------------------------------------------
# approvals
# ---------------------------------------------------------------------------------------------

test_valid_controller_approval_clears_require_approval if {
	d := decide(approved(1500, "carol"))
	d.allow == true
	d.deny == []
	d.require_approval == []
	d.approver_roles == ["finance-controller"]
}

test_valid_cfo_approval_clears_require_approval if {
	d := decide(approved(60000, "dave"))
	d.allow == true
	d.require_approval == []
}

test_valid_approval_clears_compliance_flag if {
	d := decide(object.union(approved(10, "frank"), {"compliance_flagged": true}))
	d.allow == true
	d.require_approval == []
}

test_self_approval_by_requester_is_denied if {
	d := decide(object.union(approved(1500, "carol"), {"requested_by": "carol"}))
	d.allow == false
	d.deny == ["segregation of duties: carol requested this entry and cannot approve it"]
	count(d.require_approval) == 1
}

test_self_approval_by_preparer_is_denied if {
	d := decide(object.union(approved(1500, "frank"), {"preparer": "frank"}))
	d.allow == false
	d.deny == ["segregation of duties: frank prepared this entry and cannot approve it"]
}

test_self_approval_is_denied_even_when_no_approval_is_needed if {
	d := decide(approved(10, "alice"))
	d.deny == ["segregation of duties: alice requested this entry and cannot approve it"]
}

test_wrong_role_approver_is_denied if {
	d := decide(approved(60000, "carol"))
	d.allow == false
	d.deny == ["carol cannot approve this: it needs one of the roles [cfo] and carol holds [finance-controller]"]
	count(d.require_approval) == 1
}

test_approver_without_any_role_is_denied if {
	d := decide(approved(1500, "erin"))
	d.deny == ["erin cannot approve this: it needs one of the roles [finance-controller] and erin holds [accountant]"]
}

test_approver_not_in_directory_is_denied if {
	d := decide(approved(1500, "mallory"))
	d.deny == ["approver 'mallory' is not in the directory, so holds no approver role"]
}

test_approval_without_approver_is_denied if {
	d := decide(object.union(with_amount(1500), {"approval": {"request_id": "apr-1", "action_digest": "x"}}))
	d.deny == ["an approval is attached but names no approver"]
	count(d.require_approval) == 1
}

test_approval_without_action_digest_is_denied if {
	d := decide(object.union(with_amount(1500), {"approval": {"approver": "carol", "request_id": "apr-1"}}))
	d.deny == ["the approval attached to entry ADJ-B0042 is not bound to an action digest"]
	count(d.require_approval) == 1
}

test_missing_approval_key_is_the_same_as_null if {
	decide(object.remove(with_amount(1500), ["approval"])) == decide(with_amount(1500))
}

# ---------------------------------------------------------------------------------------------
# eligible approvers
# ---------------------------------------------------------------------------------------------

test_eligible_approvers_exclude_the_requester if {
	d := decide(with_fields({"requested_by": "carol", "entry": object.union(base.entry, {"amount": 5000})}))
	d.eligible_approvers == ["dave", "frank"]
}

test_eligible_approvers_exclude_the_preparer if {
	d := decide(with_fields({"preparer": "frank", "entry": object.union(base.entry, {"amount": 5000})}))
	d.eligible_approvers == ["carol", "dave"]
}

test_eligible_approvers_come_from_the_directory if {
	people := {
		"alice": {"roles": ["finance-controller"]},
		"zoe": {"roles": ["cfo"]},
		"yann": {"roles": ["finance-controller", "cfo"]},
	}
	d := decide(with_amount(1000)) with data.baton.directory.people as people
	d.eligible_approvers == ["yann"]
	d2 := decide(with_amount(50000)) with data.baton.directory.people as people
	d2.eligible_approvers == ["yann", "zoe"]
}
