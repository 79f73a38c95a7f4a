# Decides whether ONE system entitlement may be granted to a new hire, and whether the hire's
# manager must approve it first. Queried by the grant activity (activities/hr.py) right before it
# writes, as data.baton.hr.entitlements.decision.
#
# Input (built by activities/hr.py grant_policy_input):
#   {"action": "grant_entitlement", "tenant": "acme",
#    "hire": {"employee_id": "E1001", "role": "engineer", "department": "engineering",
#             "country": "DE", "id_document_verified": true},
#    "entitlement": {"system": "github", "name": "admin"},
#    "requested_by": "hana",
#    "approval": null | {"request_id": "...", "action_digest": "...", "approvers": ["maya"],
#                        "escalation_level": 0}}
#
# Rules (data.baton.hr in policy/data/hr_entitlements.json):
#   * the system must be known (data.baton.hr.systems) and offer the entitlement;
#   * the entitlement must be one the hire's role may get (data.baton.hr.roles);
#   * the hire's identity must be verified;
#   * a privileged entitlement (systems[s].privileged) needs the approval of a manager of the
#     hire's department (role "<department>-manager" in data.baton.directory); the requester
#     never approves their own request. With such an approval attached, the grant is allowed.
#
# Fail closed: every check is "deny unless a positive fact holds" (zero-argument rules).
package baton.hr.entitlements

import data.baton.lib
import rego.v1

systems := data.baton.hr.systems

role_grants := data.baton.hr.roles

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
	"approver_roles": sort(required_roles),
	"eligible_approvers": eligible_approvers,
	"required_approvals": required_approvals,
	"escalation": [],
	"candidates": candidates,
}

system_name := lib.input_string(["entitlement", "system"])

entitlement_name := lib.input_string(["entitlement", "name"])

label := concat(":", [system_name, entitlement_name])

department := lib.input_string(["hire", "department"])

# ---------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------

action_known if input.action == "grant_entitlement"

tenant_known if is_object(data.baton.tenants[input.tenant])

system_known if is_object(systems[system_name])

entitlement_offered if entitlement_name in systems[system_name].entitlements

role_known if is_array(role_grants[input.hire.role])

role_may_get if label in role_grants[input.hire.role]

identity_verified if input.hire.id_document_verified == true

department_named if lib.named(department)

requester_named if lib.named(input.requested_by)

privileged if entitlement_name in systems[system_name].privileged

# Anything we cannot show to be unprivileged counts as privileged: fail closed.
unprivileged if {
	system_known
	is_array(systems[system_name].privileged)
	not privileged
}

manager_role := concat("", [department, "-manager"])

required_roles := {manager_role} if {
	not unprivileged
	department_named
} else := set()

required_approvals := [{"role": role, "count": 1} | some role in sort(required_roles)]

excluded := {person |
	person := input.requested_by
	lib.named(person)
}

candidates := {role: lib.eligible_approvers({role}, excluded) | some role in required_roles}

eligible_approvers := lib.eligible_approvers(required_roles, excluded)

# ---------------------------------------------------------------------------------------------
# The attached approval: bound to the action, by a holder of the required role, not the requester
# ---------------------------------------------------------------------------------------------

approval_attached if is_object(input.approval)

approval_bound if lib.named(input.approval.action_digest)

approvers := {person |
	approval_attached
	is_array(input.approval.approvers)
	some person in input.approval.approvers
	lib.named(person)
}

approval_problems := {reason |
	some person in approvers
	some reason in lib.approver_problems(person, lib.input_string(["requested_by"]), "", "", required_roles)
}

valid_approval if {
	approval_bound
	count(approvers) > 0
	count(approval_problems) == 0
	some person in approvers
	lib.has_any_role(person, required_roles)
}

# ---------------------------------------------------------------------------------------------
# deny
# ---------------------------------------------------------------------------------------------

deny contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy only decides 'grant_entitlement'", [
		lib.input_text(["action"]),
	])
}

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

deny contains msg if {
	not system_known
	msg := sprintf("unknown system '%s': it is not listed in data.baton.hr.systems", [
		lib.input_text(["entitlement", "system"]),
	])
}

deny contains msg if {
	system_known
	not entitlement_offered
	msg := sprintf("system '%s' has no entitlement '%s'", [system_name, lib.input_text(["entitlement", "name"])])
}

deny contains msg if {
	not role_known
	msg := sprintf("unknown role '%s': it is not listed in data.baton.hr.roles", [
		lib.input_text(["hire", "role"]),
	])
}

deny contains msg if {
	role_known
	not role_may_get
	msg := sprintf("role '%s' may not get %s", [input.hire.role, label])
}

deny contains msg if {
	not identity_verified
	msg := "the new hire's identity is not verified: no access before it is"
}

deny contains msg if {
	not requester_named
	msg := "requested_by must name a person or service"
}

deny contains msg if {
	not unprivileged
	not department_named
	msg := "a privileged entitlement needs the hire's department, to find their manager"
}

deny contains msg if {
	approval_attached
	not approval_bound
	msg := "the attached approval is not bound to an action digest"
}

deny contains reason if {
	some reason in approval_problems
}

deny contains msg if {
	not unprivileged
	department_named
	count(candidates[manager_role]) == 0
	msg := sprintf("nobody in the directory holds '%s' to approve %s", [manager_role, label])
}

# ---------------------------------------------------------------------------------------------
# require_approval (only when nothing denies)
# ---------------------------------------------------------------------------------------------

require_approval contains msg if {
	count(required_roles) > 0
	not valid_approval
	msg := sprintf("%s is privileged: a %s must approve it", [label, manager_role])
}
