# Decides whether a person may approve a finance action: queried when an approval decision
# arrives (the workflow's update validator / signal handler), as
# data.baton.finance.approval.decision.
#
# Input: {"approver": "carol", "requested_by": "alice", "preparer": "agent:reconciler",
#         "amended_by": null | "frank", "approver_roles": ["finance-controller"]}
# Authorised iff the approver is in the directory with one of the roles and is neither the
# requester, nor the preparer, nor whoever amended the entry (`amended_by`: null, missing or ""
# when nobody did). Fail closed: missing names, a non-string amended_by or an empty role list
# deny. `approver_roles` are the roles that may decide at the request's current escalation
# level (see posting.rego); whether enough approvers have decided is posting.rego's business.
package baton.finance.approval

import data.baton.lib
import rego.v1

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
}

# The fast path: an approver in the directory with one of the roles, who neither asked for,
# prepared nor amended the work, is authorised without building the sets of problems below.
# `clean` holds exactly when `problems` is empty (the policy tests check this for every case);
# only a refusal evaluates the detailed rules that say why.
deny := set() if clean else := problems

clean if {
	approver_named
	requester_named
	preparer_named
	amender_valid
	roles_named
	input.approver != input.requested_by
	input.approver != input.preparer
	input.approver != object.get(input, "amended_by", null)
	some role in data.baton.directory.people[input.approver].roles
	role in input.approver_roles
}

# Zero-argument facts, so `not fact` means the same on OPA and regorus (see policy/lib/lib.rego).
approver_named if lib.named(input.approver)

requester_named if lib.named(input.requested_by)

preparer_named if lib.named(input.preparer)

amender_valid if object.get(input, "amended_by", null) == null

amender_valid if is_string(input.amended_by)

roles_named if {
	is_array(input.approver_roles)
	count(input.approver_roles) > 0
	every role in input.approver_roles {
		lib.named(role)
	}
}

problems contains "the decision does not name an approver" if not approver_named

problems contains "the request does not name who requested it (requested_by)" if not requester_named

problems contains "the request does not name who prepared it (preparer)" if not preparer_named

problems contains "amended_by must name who amended the entry, or be null" if not amender_valid

problems contains "no approver role was named, so nobody can be authorised" if not roles_named

problems contains reason if {
	approver_named
	roles_named
	some reason in lib.approver_problems(
		input.approver,
		lib.input_string(["requested_by"]),
		lib.input_string(["preparer"]),
		lib.input_string(["amended_by"]),
		input.approver_roles,
	)
}
