# Who may receive an approval request that an approver hands on (the approver inbox's "delegate",
# the Update `delegate_approval`). Asked by the approval gate's delegation handler
# (workflows/process_base.py) after its validator checked the signed identity of the delegator.
#
# A delegate must hold, in the directory, one of the roles whose slot is still open on the request
# (the request's approver roles at its current escalation tier), and must not be the requester,
# anyone segregation of duties excludes (preparer, amender), the delegator, or someone who already
# approved. A tenant may further restrict delegation to named people (data.baton.delegation).
#
# Input: {"action": "delegate_approval", "process": "finance_close", "tenant": "acme",
#         "request_id": "apr-1", "delegator": "carol", "delegate": "frank",
#         "roles": ["finance-controller"], "requested_by": "alice", "excluded": ["baton:reconciler"],
#         "approved_by": []}
package baton.base.delegation

import data.baton.lib
import rego.v1

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": [],
	"delegate_roles": sort(delegate_roles),
}

roles := {role | some role in input.roles}

delegate := lib.input_text(["delegate"])

delegator := lib.input_text(["delegator"])

delegate_roles := lib.roles_of(delegate) & roles

deny contains msg if {
	input.action != "delegate_approval"
	msg := sprintf("unknown action '%s': this policy only decides 'delegate_approval'", [lib.input_text(["action"])])
}

deny contains msg if {
	not lib.in_directory(delegate)
	msg := sprintf("%s is not in the directory", [delegate])
}

deny contains msg if {
	lib.in_directory(delegate)
	count(delegate_roles) == 0
	msg := sprintf("%s holds none of the roles this request needs (%s)", [delegate, concat(", ", sort(roles))])
}

deny contains msg if {
	delegate == delegator
	msg := sprintf("%s cannot delegate a request to themself", [delegate])
}

deny contains msg if {
	delegate == input.requested_by
	msg := sprintf("segregation of duties: %s requested this action and cannot decide on it", [delegate])
}

deny contains msg if {
	some person in input.excluded
	person == delegate
	msg := sprintf("segregation of duties: %s prepared or amended this action and cannot decide on it", [delegate])
}

deny contains msg if {
	some person in input.approved_by
	person == delegate
	msg := sprintf("%s has already approved this request", [delegate])
}

# A tenant listed in data.baton.delegation.allowed_delegates lets only the named people receive
# delegated requests (e.g. no delegation to people outside the finance team).
deny contains msg if {
	allowed := data.baton.delegation.allowed_delegates[input.tenant]
	not delegate in allowed
	msg := sprintf("tenant %s allows delegation only to %s", [lib.input_text(["tenant"]), concat(", ", sort(allowed))])
}
