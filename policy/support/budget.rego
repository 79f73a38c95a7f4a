# Who decides when a support case's model budget runs out (activities/router.py refused a model
# call with BudgetExceeded): a support lead, never the requester. Asked by the case workflow
# (workflows/support.py) before it opens the approval request.
#
# Input: {"action": "raise_model_budget", "tenant": "acme", "case_id": "C-1",
#         "requested_by": "support-queue", "budget_usd": 0.01}
package baton.support.budget

import data.baton.lib
import rego.v1

approver_role := "support-lead"

required_roles := {approver_role}

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": sort(required_roles),
	"eligible_approvers": lib.eligible_approvers(required_roles, excluded),
	"required_approvals": [{"role": approver_role, "count": 1}],
	"escalation": [],
	"candidates": {approver_role: lib.eligible_approvers(required_roles, excluded)},
}

excluded := {person |
	person := input.requested_by
	lib.named(person)
}

deny contains msg if {
	input.action != "raise_model_budget"
	msg := sprintf("unknown action '%s': this policy only decides 'raise_model_budget'", [lib.input_text(["action"])])
}

tenant_known if is_object(data.baton.tenants[input.tenant])

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [lib.input_text(["tenant"])])
}

deny contains "nobody in the directory holds 'support-lead' to raise the budget" if {
	count(lib.eligible_approvers(required_roles, excluded)) == 0
}

require_approval contains msg if {
	msg := sprintf("the model budget of case %s is spent: a support-lead decides whether to raise it", [
		lib.input_text(["case_id"]),
	])
}
