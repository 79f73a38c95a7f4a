# Decides whether a finance close may close its period while some adjusting entries are held as
# exceptions (entries the posting policy denied: they were not posted). Queried by the close
# (workflows/finance_close.py) after everything else is posted, as
# data.baton.finance.close_exceptions.decision.
#
# Input: {"action": "close_with_exceptions", "tenant": "acme", "period": "2026-10",
#         "requested_by": "alice", "preparer": "agent:reconciler",
#         "exceptions": [{"entry_id": "ADJ-X1", "account": "9999-crypto-wallet",
#                         "amount": -250.0, "reasons": ["..."]}]}
#
# The open exceptions' total (sum of the amounts' sizes) decides, against
# data.baton.finance.limits.close_exceptions:
#   total <  sign_off_from  -> allow: the period closes with the exceptions listed;
#   total <= max_total      -> require_approval: a finance-controller signs off (not the
#                              requester, not the preparer);
#   total >  max_total      -> deny: the close fails safe (everything posted is reversed).
# Fail closed: a missing limit, a non-number amount or an unknown tenant denies.
package baton.finance.close_exceptions

import data.baton.lib
import rego.v1

limits := data.baton.finance.limits.close_exceptions

required_roles := {"finance-controller"}

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": sort(required_roles),
	"eligible_approvers": lib.eligible_approvers(required_roles, excluded),
	"required_approvals": [{"role": role, "count": 1} | some role in required_roles],
	"escalation": [],
	"candidates": {role: lib.eligible_approvers({role}, excluded) | some role in required_roles},
} if {
	sign_off_required
} else := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": [],
	"approver_roles": [],
	"eligible_approvers": [],
	"required_approvals": [],
	"escalation": [],
	"candidates": {},
}

excluded := {person |
	some field in ["requested_by", "preparer"]
	person := input[field]
	lib.named(person)
}

# -- facts ---------------------------------------------------------------------------------------

action_known if input.action == "close_with_exceptions"

tenant_known if is_object(data.baton.tenants[input.tenant])

limits_configured if {
	is_number(limits.sign_off_from)
	is_number(limits.max_total)
}

exceptions_listed if {
	is_array(input.exceptions)
	count(input.exceptions) > 0
	every item in input.exceptions {
		lib.named(item.entry_id)
		is_number(item.amount)
	}
}

total := sum([abs(item.amount) | some item in input.exceptions]) if exceptions_listed

within_max if total <= limits.max_total

below_sign_off if total < limits.sign_off_from

sign_off_required if {
	count(deny) == 0
	not below_sign_off
}

# -- deny: the close fails safe ------------------------------------------------------------------

deny contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy only decides 'close_with_exceptions'", [
		lib.input_text(["action"]),
	])
}

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

deny contains "data.baton.finance.limits.close_exceptions needs numbers sign_off_from and max_total" if {
	not limits_configured
}

deny contains "exceptions must be a non-empty list of entries with an entry_id and a numeric amount" if {
	not exceptions_listed
}

deny contains msg if {
	limits_configured
	exceptions_listed
	not within_max
	msg := sprintf("open exceptions total %s, above the most a period may close with (%s): the close fails safe", [
		lib.money(total),
		lib.money(limits.max_total),
	])
}

deny contains "nobody in the directory may sign off the exceptions (finance-controller)" if {
	count(lib.eligible_approvers(required_roles, excluded)) == 0
}

# -- require_approval: a controller signs off ------------------------------------------------------

require_approval contains msg if {
	sign_off_required
	msg := sprintf("open exceptions total %s, at or above the sign-off threshold %s: a finance-controller must sign off closing with them", [
		lib.money(total),
		lib.money(limits.sign_off_from),
	])
}
