# Decides whether a support agent may update a customer's ticket, and whether a support lead must
# approve the update first. Asked twice: by the case workflow as a preflight (a require_approval
# there means the case is escalated to the strong model tier and to a human), and by the ticket
# connector (activities/support.py apply_ticket_update) right before it writes.
#
# Input (built by activities/support.py ticket_policy_input):
#   {"action": "update_ticket", "tenant": "acme",
#    "case": {"case_id": "C-1", "priority": "P2", "customer_value_usd": 1200, "category": "billing"},
#    "update": {"status": "resolved", "reply_chars": 240},
#    "requested_by": "support-queue",
#    "approval": null | {"request_id": "...", "action_digest": "...", "approvers": ["sam"], ...}}
#
# Rules (data.baton.support_desk in policy/data/support.json):
#   * the status must be one of data.baton.support_desk.statuses, the priority one of
#     data.baton.support_desk.priorities, the tenant known;
#   * a reply is needed to resolve a ticket (reply_chars >= 1);
#   * a high-value customer (customer_value_usd >= high_value_usd) or a category listed in
#     approval_categories (e.g. cancellation: retention matters) needs a support lead's
#     approval; with a valid approval attached, the update is allowed.
#
# Fail closed: every check is "deny unless a positive fact holds".
package baton.support.ticket_update

import data.baton.lib
import rego.v1

support := data.baton.support_desk

approver_role := "support-lead"

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

action_known if input.action == "update_ticket"

tenant_known if is_object(data.baton.tenants[input.tenant])

status_known if input.update.status in support.statuses

priority_known if input.case.priority in support.priorities

case_named if lib.named(input.case.case_id)

value_valid if {
	is_number(input.case.customer_value_usd)
	input.case.customer_value_usd >= 0
}

threshold_configured if {
	is_number(support.high_value_usd)
	support.high_value_usd > 0
}

has_reply if {
	is_number(input.update.reply_chars)
	input.update.reply_chars >= 1
}

high_value if {
	value_valid
	threshold_configured
	input.case.customer_value_usd >= support.high_value_usd
}

sensitive_category if input.case.category in support.approval_categories

# Anything we cannot show to be ordinary needs a human: fail closed.
ordinary if {
	value_valid
	threshold_configured
	not high_value
	is_array(support.approval_categories)
	not sensitive_category
}

required_roles := {approver_role} if not ordinary
else := set()

required_approvals := [{"role": role, "count": 1} | some role in sort(required_roles)]

excluded := {person |
	person := input.requested_by
	lib.named(person)
}

candidates := {role: lib.eligible_approvers({role}, excluded) | some role in required_roles}

eligible_approvers := lib.eligible_approvers(required_roles, excluded)

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

deny contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy only decides 'update_ticket'", [lib.input_text(["action"])])
}

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [lib.input_text(["tenant"])])
}

deny contains "the update names no case (case.case_id)" if not case_named

deny contains msg if {
	not status_known
	msg := sprintf("unknown ticket status '%s': use one of %s", [
		lib.input_text(["update", "status"]),
		concat(", ", sort(support.statuses)),
	])
}

deny contains msg if {
	not priority_known
	msg := sprintf("unknown priority '%s'", [lib.input_text(["case", "priority"])])
}

deny contains "case.customer_value_usd must be a number >= 0" if not value_valid

deny contains "policy data is incomplete: data.baton.support_desk.high_value_usd must be a number > 0" if {
	not threshold_configured
}

deny contains "a ticket is not resolved without a reply to the customer" if {
	input.update.status == "resolved"
	not has_reply
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
	count(required_roles) > 0
	count(candidates[approver_role]) == 0
	msg := "nobody in the directory holds 'support-lead' to approve the update"
}

require_approval contains msg if {
	high_value
	not valid_approval
	msg := sprintf("customer value %v USD is at least %v USD: a support-lead must approve the update", [
		input.case.customer_value_usd,
		support.high_value_usd,
	])
}

require_approval contains msg if {
	sensitive_category
	not valid_approval
	msg := sprintf("'%s' cases need a support-lead's approval before the ticket is updated", [input.case.category])
}
