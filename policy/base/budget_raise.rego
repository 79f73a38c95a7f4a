# Who decides when a governed run's model budget runs out (activities/router.py refused a model
# call with BudgetExceeded): a person holding the process's budget role (data.baton.budget_roles),
# never the one who started the run. Asked by the workflow (workflows/process_base.py) before it
# opens the approval request; approved, the run's own cap is lifted (the tenant's daily cap holds).
#
# Input: {"action": "raise_model_budget", "process": "finance_close", "tenant": "acme",
#         "subject": "finance-close/acme/2026-10", "step": "propose_adjustments",
#         "requested_by": "alice", "budget_usd": 0.01}
package baton.base.budget_raise

import data.baton.lib
import rego.v1

# empty when the process names no role (denied below, so the decision is still defined)
required_roles := {role | role := data.baton.budget_roles[input.process]}

role_names := concat(", ", sort(required_roles))

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": sort(required_roles),
	"eligible_approvers": lib.eligible_approvers(required_roles, excluded),
	"required_approvals": [{"role": role, "count": 1} | some role in required_roles],
	"escalation": [],
	"candidates": {role: lib.eligible_approvers(required_roles, excluded) | some role in required_roles},
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

deny contains msg if {
	count(required_roles) == 0
	msg := sprintf("process '%s' names no budget role in data.baton.budget_roles", [lib.input_text(["process"])])
}

deny contains msg if {
	count(required_roles) > 0
	count(lib.eligible_approvers(required_roles, excluded)) == 0
	msg := sprintf("nobody in the directory holds '%s' to raise the budget", [role_names])
}

require_approval contains msg if {
	msg := sprintf("the model budget of %s is spent at step %s: a %s decides whether to raise it", [
		lib.input_text(["subject"]),
		lib.input_text(["step"]),
		role_names,
	])
}
