package baton.support.budget_test

import data.baton.support.budget
import rego.v1

base := {
	"action": "raise_model_budget",
	"tenant": "acme",
	"case_id": "C-1",
	"requested_by": "support-queue",
	"budget_usd": 0.01,
}

test_a_support_lead_decides if {
	d := budget.decision with input as base
	d.deny == []
	count(d.require_approval) == 1
	d.approver_roles == ["support-lead"]
	d.candidates["support-lead"] == ["sam"]
}

test_the_requester_never_decides if {
	d := budget.decision with input as object.union(base, {"requested_by": "sam"})
	"nobody in the directory holds 'support-lead' to raise the budget" in d.deny
}

test_unknown_tenant_is_denied if {
	d := budget.decision with input as object.union(base, {"tenant": "nobody"})
	d.allow == false
}

test_unknown_action_is_denied if {
	d := budget.decision with input as object.union(base, {"action": "spend_more"})
	d.allow == false
}
