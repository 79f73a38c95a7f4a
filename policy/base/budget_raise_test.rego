package baton.base.budget_raise_test

import data.baton.base.budget_raise
import rego.v1

base := {
	"action": "raise_model_budget",
	"process": "finance_close",
	"tenant": "acme",
	"subject": "finance-close/acme/2026-10",
	"step": "propose_adjustments",
	"requested_by": "alice",
	"budget_usd": 0.01,
}

test_the_processes_budget_role_decides if {
	d := budget_raise.decision with input as base
	d.deny == []
	count(d.require_approval) == 1
	d.approver_roles == ["finance-controller"]
	d.required_approvals == [{"role": "finance-controller", "count": 1}]
	d.candidates["finance-controller"] == ["carol", "dave", "frank"]
}

test_each_process_has_its_own_role if {
	d := budget_raise.decision with input as object.union(base, {"process": "hr_onboarding"})
	d.approver_roles == ["hr-partner"]
	d.candidates["hr-partner"] == ["hana"]
}

test_the_requester_never_decides if {
	d := budget_raise.decision with input as object.union(base, {"process": "hr_onboarding", "requested_by": "hana"})
	"nobody in the directory holds 'hr-partner' to raise the budget" in d.deny
}

test_a_process_without_a_budget_role_is_denied if {
	d := budget_raise.decision with input as object.union(base, {"process": "payroll"})
	d.allow == false
	"process 'payroll' names no budget role in data.baton.budget_roles" in d.deny
}

test_unknown_tenant_is_denied if {
	d := budget_raise.decision with input as object.union(base, {"tenant": "nobody"})
	d.allow == false
}

test_unknown_action_is_denied if {
	d := budget_raise.decision with input as object.union(base, {"action": "spend_more"})
	d.allow == false
}
