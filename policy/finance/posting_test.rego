# Unit tests for baton.finance.posting: every deny rule, every approval tier and its boundaries,
# N-of-M approvals (distinct people, duplicates, self-approval, amenders, wrong role), escalation
# (widening by level, bad levels, bad data) and the candidate / eligible-approver lists. Run by
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
	"amended_by": null,
	"approval": null,
}

# The base input with fields replaced (object.union merges nested objects; use json.remove to
# drop a nested field).
with_fields(fields) := object.union(base, fields)

# The base input with entry fields replaced.
with_entry(fields) := object.union(base, {"entry": object.union(base.entry, fields)})

with_amount(amount) := with_entry({"amount": amount})

# An entry of `amount` approved by `approvers` at escalation `level` (bound to an action digest,
# as the workflow sends it).
approved_at(amount, approvers, level) := object.union(with_amount(amount), {"approval": {
	"request_id": "apr-1",
	"action_digest": "sha256-of-the-action",
	"approvers": approvers,
	"escalation_level": level,
}})

approved(amount, approvers) := approved_at(amount, approvers, 0)

# An entry of `amount` with these approval fields (to break one).
with_approval(amount, fields) := object.union(with_amount(amount), {"approval": object.union(
	{
		"request_id": "apr-1",
		"action_digest": "sha256-of-the-action",
		"approvers": ["carol"],
		"escalation_level": 0,
	},
	fields,
)})

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
	d.required_approvals == []
	d.escalation == []
	d.candidates == {}
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
	d.approver_roles == ["cfo", "finance-controller"]
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

test_deny_amended_by_that_is_not_a_name if {
	d := decide(with_fields({"amended_by": 42}))
	d.deny == ["amended_by on entry ADJ-B0042 must name who amended it, or be null"]
	decide(with_fields({"amended_by": ["carol"]})).allow == false
	decide(with_fields({"amended_by": ""})).allow == true
	decide(object.remove(base, ["amended_by"])).allow == true
}

test_deny_when_escalation_data_is_missing_or_malformed if {
	msg := "policy data is incomplete: data.baton.finance.escalation must be a list of tiers, each with a non-empty list of roles and a whole number sla_seconds >= 1"
	decide(base).deny == [msg] with data.baton.finance.escalation as null
	decide(base).deny == [msg] with data.baton.finance.escalation as {"roles": ["cfo"]}
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": [], "sla_seconds": 10}]
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": "cfo", "sla_seconds": 10}]
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": [""], "sla_seconds": 10}]
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": ["cfo"], "sla_seconds": 0}]
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": ["cfo"], "sla_seconds": 1.5}]
	decide(base).deny == [msg] with data.baton.finance.escalation as [{"roles": ["cfo"]}]
	decide(base).deny == [msg] with data.baton.finance.escalation as ["cfo"]
}

test_no_escalation_chain_is_valid_data if {
	d := decide(with_amount(1500)) with data.baton.finance.escalation as []
	d.deny == []
	d.escalation == []
	d.candidates == {"finance-controller": ["carol", "dave", "frank"]}
}

# ---------------------------------------------------------------------------------------------
# require_approval tiers and boundaries
# ---------------------------------------------------------------------------------------------

controller := [{"role": "finance-controller", "count": 1}]

controller_and_cfo := [{"role": "cfo", "count": 1}, {"role": "finance-controller", "count": 1}]

shipped_chain := [{"roles": ["cfo"], "sla_seconds": 14400}, {"roles": ["ceo"], "sla_seconds": 86400}]

test_below_approval_threshold_needs_no_approval if {
	d := decide(with_amount(999.99))
	d.allow == true
	d.require_approval == []
	d.approver_roles == []
	d.required_approvals == []
	d.escalation == []
	d.candidates == {}
}

test_approval_threshold_needs_finance_controller if {
	d := decide(with_amount(1000))
	d.allow == true
	d.require_approval == ["amount 1000.00 on entry ADJ-B0042 is at or above the approval threshold of 1000.00: a finance-controller must approve it"]
	d.approver_roles == ["finance-controller"]
	d.required_approvals == controller
	d.eligible_approvers == ["carol", "dave", "frank"]
	d.escalation == shipped_chain
	d.candidates == {
		"finance-controller": ["carol", "dave", "frank"],
		"cfo": ["dave", "ivan"],
		"ceo": ["grace"],
	}
}

test_negative_amount_counts_by_size if {
	d := decide(with_amount(-1000))
	d.approver_roles == ["finance-controller"]
	d.required_approvals == controller
	d.require_approval == ["amount -1000.00 on entry ADJ-B0042 is at or above the approval threshold of 1000.00: a finance-controller must approve it"]
}

test_below_cfo_threshold_needs_finance_controller if {
	d := decide(with_amount(49999.99))
	d.approver_roles == ["finance-controller"]
	d.required_approvals == controller
	count(d.require_approval) == 1
}

test_cfo_threshold_needs_a_cfo_and_a_controller if {
	d := decide(with_amount(50000))
	d.allow == true
	d.require_approval == ["amount 50000.00 on entry ADJ-B0042 is at or above the CFO threshold of 50000.00: a cfo and a finance-controller (two different people) must approve it"]
	d.approver_roles == ["cfo", "finance-controller"]
	d.required_approvals == controller_and_cfo
	d.eligible_approvers == ["carol", "dave", "frank", "ivan"]
	d.escalation == shipped_chain
	d.candidates == {
		"cfo": ["dave", "ivan"],
		"finance-controller": ["carol", "dave", "frank"],
		"ceo": ["grace"],
	}
}

test_thresholds_come_from_data if {
	d := decide(with_amount(20)) with data.baton.finance.limits.approval_threshold as 10
		with data.baton.finance.limits.cfo_threshold as 15
	d.approver_roles == ["cfo", "finance-controller"]
}

test_escalation_comes_from_data if {
	chain := [{"roles": ["treasurer", "cfo"], "sla_seconds": 60}]
	d := decide(with_amount(1500)) with data.baton.finance.escalation as chain
	d.escalation == chain
	d.candidates == {"finance-controller": ["carol", "dave", "frank"], "treasurer": [], "cfo": ["dave", "ivan"]}
}

test_compliance_flag_needs_finance_controller if {
	d := decide(with_fields({"compliance_flagged": true}))
	d.allow == true
	d.require_approval == ["compliance flagged entry ADJ-B0042: a finance-controller must review it before it is posted"]
	d.approver_roles == ["finance-controller"]
	d.required_approvals == controller
	d.escalation == shipped_chain
}

test_compliance_flag_on_cfo_entry_keeps_both_roles if {
	d := decide(object.union(with_amount(75000), {"compliance_flagged": true}))
	d.approver_roles == ["cfo", "finance-controller"]
	d.required_approvals == controller_and_cfo
	d.require_approval == [
		"amount 75000.00 on entry ADJ-B0042 is at or above the CFO threshold of 50000.00: a cfo and a finance-controller (two different people) must approve it",
		"compliance flagged entry ADJ-B0042: a cfo and a finance-controller must review it before it is posted",
	]
}

test_missing_compliance_flag_counts_as_flagged if {
	d := decide(object.remove(base, ["compliance_flagged"]))
	d.approver_roles == ["finance-controller"]
}

# ---------------------------------------------------------------------------------------------
# approvals: one slot
# ---------------------------------------------------------------------------------------------

test_valid_controller_approval_clears_require_approval if {
	d := decide(approved(1500, ["carol"]))
	d.allow == true
	d.deny == []
	d.require_approval == []
	d.approver_roles == ["finance-controller"]
	d.required_approvals == controller
}

test_valid_approval_clears_compliance_flag if {
	d := decide(object.union(approved(10, ["frank"]), {"compliance_flagged": true}))
	d.allow == true
	d.require_approval == []
}

test_extra_approvers_are_fine if {
	d := decide(approved(1500, ["carol", "frank"]))
	d.allow == true
	d.require_approval == []
}

test_self_approval_by_requester_is_denied if {
	d := decide(object.union(approved(1500, ["carol"]), {"requested_by": "carol"}))
	d.allow == false
	d.deny == ["segregation of duties: carol requested this entry and cannot approve it"]
	count(d.require_approval) == 1
}

test_self_approval_by_preparer_is_denied if {
	d := decide(object.union(approved(1500, ["frank"]), {"preparer": "frank"}))
	d.allow == false
	d.deny == ["segregation of duties: frank prepared this entry and cannot approve it"]
}

test_approval_by_amender_is_denied if {
	d := decide(object.union(approved(1500, ["carol"]), {"amended_by": "carol"}))
	d.allow == false
	d.deny == ["segregation of duties: carol amended this entry and cannot approve it"]
	count(d.require_approval) == 1
}

test_amender_next_to_a_valid_approver_is_still_denied if {
	d := decide(object.union(approved(1500, ["frank", "carol"]), {"amended_by": "carol"}))
	d.deny == ["segregation of duties: carol amended this entry and cannot approve it"]
}

test_someone_else_may_approve_an_amended_entry if {
	d := decide(object.union(approved(1500, ["frank"]), {"amended_by": "carol"}))
	d.allow == true
	d.require_approval == []
}

test_self_approval_is_denied_even_when_no_approval_is_needed if {
	d := decide(approved(10, ["alice"]))
	d.deny == ["segregation of duties: alice requested this entry and cannot approve it"]
}

test_approver_without_any_role_is_denied if {
	d := decide(approved(1500, ["erin"]))
	d.deny == ["erin cannot approve this: it needs one of the roles [finance-controller] and erin holds [accountant]"]
}

test_approver_not_in_directory_is_denied if {
	d := decide(approved(1500, ["mallory"]))
	d.deny == ["approver 'mallory' is not in the directory, so holds no approver role"]
}

test_approval_without_action_digest_is_denied if {
	d := decide(object.union(with_amount(1500), {"approval": {
		"request_id": "apr-1",
		"approvers": ["carol"],
		"escalation_level": 0,
	}}))
	d.deny == ["the approval attached to entry ADJ-B0042 is not bound to an action digest"]
	count(d.require_approval) == 1
	decide(with_approval(1500, {"action_digest": ""})).allow == false
}

test_missing_approval_key_is_the_same_as_null if {
	decide(object.remove(with_amount(1500), ["approval"])) == decide(with_amount(1500))
}

# ---------------------------------------------------------------------------------------------
# approvals: the approvers list
# ---------------------------------------------------------------------------------------------

approvers_msg := "the approval attached to entry ADJ-B0042 must list its approvers: a non-empty list of names"

test_approval_without_approvers_is_denied if {
	d := decide(object.union(with_amount(1500), {"approval": {
		"request_id": "apr-1",
		"action_digest": "x",
		"escalation_level": 0,
	}}))
	d.deny == [approvers_msg]
	count(d.require_approval) == 1
}

test_old_single_approver_shape_is_denied if {
	d := decide(object.union(with_amount(1500), {"approval": {
		"request_id": "apr-1",
		"action_digest": "x",
		"approver": "carol",
	}}))
	d.allow == false
	approvers_msg in d.deny
}

test_invalid_approvers_lists_are_denied if {
	decide(with_approval(1500, {"approvers": []})).deny == [approvers_msg]
	decide(with_approval(1500, {"approvers": "carol"})).deny == [approvers_msg]
	decide(with_approval(1500, {"approvers": null})).deny == [approvers_msg]
	decide(with_approval(1500, {"approvers": [""]})).deny == [approvers_msg]
	decide(with_approval(1500, {"approvers": [3]})).deny == [approvers_msg]
	decide(with_approval(1500, {"approvers": {"carol": true}})).deny == [approvers_msg]
}

test_named_approvers_next_to_junk_are_still_checked if {
	d := decide(with_approval(1500, {"approvers": ["alice", null]}))
	d.deny == [
		"alice cannot approve this: it needs one of the roles [finance-controller] and alice holds [accountant]",
		"segregation of duties: alice requested this entry and cannot approve it",
		approvers_msg,
	]
	count(d.require_approval) == 1
}

test_duplicate_approver_is_denied if {
	d := decide(approved(1500, ["carol", "carol"]))
	d.allow == false
	d.deny == ["carol is counted twice in the approval of entry ADJ-B0042: approvers must be different people"]
	count(d.require_approval) == 1
}

test_duplicate_cannot_fill_two_slots if {
	d := decide(approved(60000, ["dave", "dave"]))
	d.deny == ["dave is counted twice in the approval of entry ADJ-B0042: approvers must be different people"]
}

# ---------------------------------------------------------------------------------------------
# approvals: N-of-M with distinct people (cfo-level: a cfo AND a finance-controller)
# ---------------------------------------------------------------------------------------------

cfo_msg := "amount 60000.00 on entry ADJ-B0042 is at or above the CFO threshold of 50000.00: a cfo and a finance-controller (two different people) must approve it"

test_cfo_and_controller_together_allow if {
	d := decide(approved(60000, ["dave", "carol"]))
	d.allow == true
	d.deny == []
	d.require_approval == []
	decide(approved(60000, ["frank", "dave"])).require_approval == []
}

test_dave_holds_both_roles_but_fills_one_slot if {
	d := decide(approved(60000, ["dave"]))
	d.allow == true
	d.deny == []
	d.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by dave): one more approver holding cfo or finance-controller must also approve",
	]
}

test_controllers_alone_still_need_a_cfo if {
	d := decide(approved(60000, ["carol", "frank"]))
	d.deny == []
	d.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by carol, frank): a cfo must also approve",
	]
}

test_one_controller_still_needs_a_cfo if {
	d := decide(approved(60000, ["carol"]))
	d.deny == []
	d.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by carol): a cfo must also approve",
	]
}

test_two_cfos_still_need_a_controller if {
	people := object.union(data.baton.directory.people, {"zoe": {"roles": ["cfo"]}})
	d := decide(approved(60000, ["dave", "zoe"])) with data.baton.directory.people as people
	d.deny == []
	d.require_approval == []

	d2 := decide(approved(60000, ["zoe"])) with data.baton.directory.people as {"zoe": {"roles": ["cfo"]}, "yann": {"roles": ["cfo"]}}
	d2.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by zoe): a finance-controller must also approve",
	]
	d3 := decide(approved(60000, ["zoe", "yann"])) with data.baton.directory.people as {"zoe": {"roles": ["cfo"]}, "yann": {"roles": ["cfo"]}}
	d3.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by yann, zoe): a finance-controller must also approve",
	]
}

test_wrong_role_on_cfo_entry_is_denied if {
	d := decide(approved(60000, ["carol", "erin"]))
	d.allow == false
	d.deny == ["erin cannot approve this: it needs one of the roles [cfo, finance-controller] and erin holds [accountant]"]
	d.require_approval == [cfo_msg]
}

test_flagged_cfo_entry_is_cleared_by_both if {
	d := decide(object.union(approved(60000, ["carol", "dave"]), {"compliance_flagged": true}))
	d.allow == true
	d.require_approval == []
}

test_amender_cannot_fill_a_slot_on_a_cfo_entry if {
	d := decide(object.union(approved(60000, ["carol", "dave"]), {"amended_by": "dave"}))
	d.deny == ["segregation of duties: dave amended this entry and cannot approve it"]
	d.candidates == {"cfo": ["ivan"], "finance-controller": ["carol", "frank"], "ceo": ["grace"]}
	d.eligible_approvers == ["carol", "frank", "ivan"]
}

# ---------------------------------------------------------------------------------------------
# approvals: escalation widens who may fill a slot
# ---------------------------------------------------------------------------------------------

test_ceo_fills_the_cfo_slot_only_at_level_2 if {
	level0 := decide(approved_at(60000, ["carol", "grace"], 0))
	level0.deny == ["grace cannot approve this: it needs one of the roles [cfo, finance-controller] and grace holds [ceo]"]
	level0.require_approval == [cfo_msg]

	level1 := decide(approved_at(60000, ["carol", "grace"], 1))
	level1.deny == ["grace cannot approve this: it needs one of the roles [cfo, finance-controller] and grace holds [ceo]"]

	level2 := decide(approved_at(60000, ["carol", "grace"], 2))
	level2.allow == true
	level2.deny == []
	level2.require_approval == []
}

test_ceo_fills_any_slot_at_level_2 if {
	# grace can fill the controller slot next to the cfo.
	d := decide(approved_at(60000, ["dave", "grace"], 2))
	d.deny == []
	d.require_approval == []

	# One person is one slot, even a ceo.
	alone := decide(approved_at(60000, ["grace"], 2))
	alone.deny == []
	alone.require_approval == [
		cfo_msg,
		"entry ADJ-B0042 is not fully approved yet (approved so far by grace): one more approver holding ceo or cfo or finance-controller must also approve",
	]
}

test_ceo_approves_a_controller_entry_at_level_2 if {
	decide(approved_at(1500, ["grace"], 0)).deny == ["grace cannot approve this: it needs one of the roles [finance-controller] and grace holds [ceo]"]
	decide(approved_at(1500, ["grace"], 1)).deny == ["grace cannot approve this: it needs one of the roles [cfo, finance-controller] and grace holds [ceo]"]
	d := decide(approved_at(1500, ["grace"], 2))
	d.allow == true
	d.require_approval == []
}

test_cfo_fills_a_controller_slot_from_level_1 if {
	people := {"zoe": {"roles": ["cfo"]}, "yann": {"roles": ["cfo"]}}
	level0 := decide(approved_at(1500, ["zoe"], 0)) with data.baton.directory.people as people
	level0.deny == ["zoe cannot approve this: it needs one of the roles [finance-controller] and zoe holds [cfo]"]
	level1 := decide(approved_at(1500, ["zoe"], 1)) with data.baton.directory.people as people
	level1.deny == []
	level1.require_approval == []

	# Two cfos on a cfo-level entry: short of a controller at level 0, enough from level 1.
	cfo0 := decide(approved_at(60000, ["zoe", "yann"], 0)) with data.baton.directory.people as people
	count(cfo0.require_approval) == 2
	cfo1 := decide(approved_at(60000, ["zoe", "yann"], 1)) with data.baton.directory.people as people
	cfo1.require_approval == []
	cfo1.allow == true
}

test_escalation_does_not_excuse_segregation_of_duties if {
	d := decide(object.union(approved_at(60000, ["carol", "grace"], 2), {"requested_by": "grace"}))
	d.deny == ["segregation of duties: grace requested this entry and cannot approve it"]
}

level_msg := "the approval attached to entry ADJ-B0042 has an invalid escalation_level: it must be a whole number from 0 to 2 (the tiers of the escalation chain)"

test_bad_escalation_level_is_denied if {
	decide(approved_at(1500, ["carol"], -1)).deny == [level_msg]
	decide(approved_at(1500, ["carol"], 3)).deny == [level_msg]
	decide(approved_at(1500, ["carol"], 1.5)).deny == [level_msg]
	decide(approved_at(1500, ["carol"], "1")).deny == [level_msg]
	decide(approved_at(1500, ["carol"], null)).deny == [level_msg]
	decide(approved_at(1500, ["carol"], true)).deny == [level_msg]
	d := decide(object.union(with_amount(1500), {"approval": {
		"request_id": "apr-1",
		"action_digest": "x",
		"approvers": ["carol"],
	}}))
	d.deny == [level_msg]
	count(d.require_approval) == 1
}

test_bad_escalation_level_does_not_widen_roles if {
	d := decide(approved_at(1500, ["grace"], 7))
	d.deny == [
		"grace cannot approve this: it needs one of the roles [finance-controller] and grace holds [ceo]",
		level_msg,
	]
}

test_escalation_level_is_bounded_by_the_chain_in_data if {
	d := decide(approved_at(1500, ["carol"], 1)) with data.baton.finance.escalation as []
	d.deny == ["the approval attached to entry ADJ-B0042 has an invalid escalation_level: it must be a whole number from 0 to 0 (the tiers of the escalation chain)"]
	decide(approved_at(1500, ["carol"], 0)).allow == true with data.baton.finance.escalation as []
	decide(approved_at(1500, ["carol"], 2)).allow == true
	decide(approved_at(10, ["carol"], 2)).allow == true
}

# ---------------------------------------------------------------------------------------------
# eligible approvers and candidates
# ---------------------------------------------------------------------------------------------

test_eligible_approvers_exclude_the_requester if {
	d := decide(with_fields({"requested_by": "carol", "entry": object.union(base.entry, {"amount": 5000})}))
	d.eligible_approvers == ["dave", "frank"]
	d.candidates["finance-controller"] == ["dave", "frank"]
}

test_eligible_approvers_exclude_the_preparer if {
	d := decide(with_fields({"preparer": "frank", "entry": object.union(base.entry, {"amount": 5000})}))
	d.eligible_approvers == ["carol", "dave"]
}

test_eligible_approvers_exclude_the_amender if {
	d := decide(with_fields({"amended_by": "dave", "entry": object.union(base.entry, {"amount": 5000})}))
	d.eligible_approvers == ["carol", "frank"]
	d.candidates == {"finance-controller": ["carol", "frank"], "cfo": ["ivan"], "ceo": ["grace"]}
}

test_candidates_exclude_requester_preparer_and_amender if {
	d := decide(with_fields({
		"requested_by": "carol",
		"preparer": "frank",
		"amended_by": "grace",
		"entry": object.union(base.entry, {"amount": 60000}),
	}))
	d.candidates == {"cfo": ["dave", "ivan"], "finance-controller": ["dave"], "ceo": []}
	d.eligible_approvers == ["dave", "ivan"]
}

test_eligible_approvers_come_from_the_directory if {
	people := {
		"alice": {"roles": ["finance-controller"]},
		"zoe": {"roles": ["cfo"]},
		"yann": {"roles": ["finance-controller", "cfo"]},
	}
	d := decide(with_amount(1000)) with data.baton.directory.people as people
	d.eligible_approvers == ["yann"]
	d.candidates == {"finance-controller": ["yann"], "cfo": ["yann", "zoe"], "ceo": []}
	d2 := decide(with_amount(50000)) with data.baton.directory.people as people
	d2.eligible_approvers == ["yann", "zoe"]
	d2.candidates == {"finance-controller": ["yann"], "cfo": ["yann", "zoe"], "ceo": []}
}

# The fast path must not skip a CFO approval when the data puts the CFO threshold below the
# approval threshold.
test_fast_path_follows_thresholds_in_any_order if {
	d := decide(with_amount(500)) with data.baton.finance.limits.cfo_threshold as 400
	d.require_approval == ["amount 500.00 on entry ADJ-B0042 is at or above the CFO threshold of 400.00: a cfo and a finance-controller (two different people) must approve it"]
	d.required_approvals == controller_and_cfo
}
