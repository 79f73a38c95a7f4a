# May this agent call this tool with these arguments now, and who must approve it first? Queried
# before every governed tool call as data.baton.base.tool_call.decision.
#
# Input:
#   {"tool": "issue_refund", "arguments": {"order_id": "O-7", "amount_usd": 120},
#    "principal": {"role": "l2_researcher", "tenant": "acme", "requested_by": "support-queue",
#                  "process": "agent_run", "agent": "l2_researcher"},
#    "history": {"calls": {"lookup_order": 3, "issue_refund": 1}, "total_calls": 4,
#                "amounts": {"issue_refund": 120}, "denials": 1, "denied": {"issue_refund": 1}},
#    "approval": null | {"action_digest": "...", "approvers": ["sam"]}}
#
# `history` is the run so far, kept by the runtime as counts (calls per tool and in total), so
# the policy reads a count by key instead of scanning a list of earlier calls.
#
# Rules (data.baton.tools in policy/data/tools.json):
#   * the tool must be in the catalogue and the principal's role among the tool's roles;
#   * the principal's tenant must be known (data.baton.tenants);
#   * per-tool and per-run call limits: a call that would exceed max_calls_per_run is a deny;
#   * a tool with an amount_argument: the amount must be a number >= 0, above hard_limit_usd is
#     a deny, above approval_above_usd needs one approver holding approver_role (never the one
#     who requested the run), unless an approval bound to the call's digest is attached;
#   * shipped example rules over the run's history (workflows/agent_loop.py keeps it):
#     - no more than max_refunds_per_case refunds or credits (the refund_tools) per case (run);
#     - a tool with requires_approval (email_customer) needs an approver_role approval on every
#       call: approval before any email to a customer;
#     - never call X after reading Y: forbidden_after[X] lists the tools whose call earlier in
#       the run forbids X (no email to a customer after reading internal notes).
#
# Speed: one keyed look-up of the tool; the clean path is one rule body; approval obligations
# are computed only when an approval is required.
package baton.base.tool_call

import data.baton.lib
import rego.v1

decision := {"allow": true, "deny": [], "require_approval": []} if {
	clean
	not approval_needed
} else := object.union(verdict, approval_obligations) if {
	count(deny) == 0
	count(require_approval) > 0
} else := verdict

verdict := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"require_approval": sort(require_approval),
}

tool := data.baton.tools.catalogue[input.tool]

tool_name := lib.input_text(["tool"])

role_name := lib.input_text(["principal", "role"])

# ---------------------------------------------------------------------------------------------
# Fast path (same contract as the other base policies: `clean` holds iff `problems` is empty)
# ---------------------------------------------------------------------------------------------

deny := set() if clean else := problems

require_approval := set() if {
	clean
	not approval_needed
} else := approval_reasons

clean if {
	tool_known
	role_allowed
	tenant_known
	run_limit_configured
	within_tool_limit
	within_run_limit
	amount_acceptable
	approval_well_formed
	within_refund_limit
	count(read_before) == 0
}

# ---------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------

tool_known if is_object(tool)

role_allowed if input.principal.role in tool.roles

tenant_known if is_object(data.baton.tenants[input.principal.tenant])

# (Whole numbers checked inline: a function call costs more than the comparisons.)
run_limit_configured if {
	is_number(data.baton.tools.max_calls_per_run)
	data.baton.tools.max_calls_per_run == floor(data.baton.tools.max_calls_per_run)
	data.baton.tools.max_calls_per_run >= 0
	is_number(tool.max_calls_per_run)
	tool.max_calls_per_run == floor(tool.max_calls_per_run)
	tool.max_calls_per_run >= 0
}

# Calls of this tool and in total so far this run; a missing count is 0, anything but a whole
# number is a deny (a runtime that cannot count must not get unlimited calls).
default calls_so_far := 0

calls_so_far := object.get(input, ["history", "calls", input.tool], 0)

default total_so_far := 0

total_so_far := object.get(input, ["history", "total_calls"], 0)

counts_valid if {
	is_number(calls_so_far)
	calls_so_far == floor(calls_so_far)
	calls_so_far >= 0
	is_number(total_so_far)
	total_so_far == floor(total_so_far)
	total_so_far >= 0
}

within_tool_limit if {
	counts_valid
	calls_so_far < tool.max_calls_per_run
}

within_run_limit if {
	counts_valid
	total_so_far < data.baton.tools.max_calls_per_run
}

has_amount if tool.amount_argument

amount := input.arguments[tool.amount_argument]

amount_configured if {
	is_string(tool.amount_argument)
	is_number(tool.approval_above_usd)
	is_number(tool.hard_limit_usd)
	is_string(tool.approver_role)
	tool.approver_role != ""
}

amount_valid if {
	is_number(amount)
	amount >= 0
}

amount_acceptable if not has_amount

amount_acceptable if {
	amount_configured
	amount_valid
	amount <= tool.hard_limit_usd
}

approval_needed if {
	has_amount
	amount_configured
	amount_valid
	amount > tool.approval_above_usd
	not approved
}

approval_needed if {
	tool.requires_approval == true
	not approved
}

# -- history rules ------------------------------------------------------------------------------

refund_tool if input.tool in data.baton.tools.refund_tools

refunds_so_far := sum([n |
	some t in data.baton.tools.refund_tools
	n := object.get(input, ["history", "calls", t], 0)
	is_number(n)
])

within_refund_limit if not refund_tool

within_refund_limit if {
	refund_tool
	refunds_so_far < data.baton.tools.max_refunds_per_case
}

# the tools read earlier in this run that forbid this one (data.baton.tools.forbidden_after)
read_before contains earlier if {
	some earlier in object.get(data.baton.tools, ["forbidden_after", tool_name], [])
	n := object.get(input, ["history", "calls", earlier], 0)
	is_number(n)
	n > 0
}

# An approval is attached when `approval` is an object; it must then be bound to the call.
approval_attached if is_object(input.approval)

approval_well_formed if not approval_attached

approval_well_formed if lib.named(input.approval.action_digest)

requester := lib.input_string(["principal", "requested_by"])

# Attached, bound, and given by someone holding the approver role who did not request the run.
approved if {
	approval_attached
	lib.named(input.approval.action_digest)
	some person in input.approval.approvers
	is_string(person)
	person != requester
	tool.approver_role in data.baton.directory.people[person].roles
}

# ---------------------------------------------------------------------------------------------
# problems: why a call is refused (evaluated only when the fast path fails)
# ---------------------------------------------------------------------------------------------

problems contains msg if {
	not tool_known
	msg := sprintf("unknown tool '%s': it is not in data.baton.tools.catalogue", [tool_name])
}

problems contains msg if {
	tool_known
	not role_allowed
	msg := sprintf("agent role '%s' may not call the tool '%s' (allowed: %s)", [
		role_name,
		tool_name,
		concat(", ", [r | some r in tool.roles; is_string(r)]),
	])
}

problems contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [lib.input_text(["principal", "tenant"])])
}

problems contains msg if {
	tool_known
	not run_limit_configured
	msg := sprintf("policy data is incomplete: data.baton.tools.max_calls_per_run and the max_calls_per_run of '%s' must be whole numbers", [tool_name])
}

problems contains "history counts must be whole numbers >= 0 (history.calls.<tool>, history.total_calls)" if {
	not counts_valid
}

problems contains msg if {
	run_limit_configured
	counts_valid
	not within_tool_limit
	msg := sprintf("call limit: '%s' may be called %d times per run and was called %d times already", [
		tool_name,
		tool.max_calls_per_run,
		calls_so_far,
	])
}

problems contains msg if {
	run_limit_configured
	counts_valid
	not within_run_limit
	msg := sprintf("call limit: a run may make %d tool calls and made %d already", [
		data.baton.tools.max_calls_per_run,
		total_so_far,
	])
}

problems contains msg if {
	has_amount
	not amount_configured
	msg := sprintf("policy data is incomplete: '%s' needs amount_argument, approval_above_usd, hard_limit_usd and approver_role", [tool_name])
}

problems contains msg if {
	has_amount
	amount_configured
	not amount_valid
	msg := sprintf("argument '%s' of '%s' must be a number >= 0", [tool.amount_argument, tool_name])
}

problems contains msg if {
	has_amount
	amount_configured
	amount_valid
	amount > tool.hard_limit_usd
	msg := sprintf("%s USD exceeds the limit of %s USD for '%s'", [lib.money(amount), lib.money(tool.hard_limit_usd), tool_name])
}

problems contains msg if {
	not approval_well_formed
	msg := sprintf("the approval attached to the call of '%s' is not bound to an action digest", [tool_name])
}

problems contains msg if {
	refund_tool
	not within_refund_limit
	msg := sprintf("refund limit: a case may get %v refunds or credits and got %v already", [
		data.baton.tools.max_refunds_per_case,
		refunds_so_far,
	])
}

problems contains msg if {
	some earlier in read_before
	msg := sprintf("'%s' may never be called after '%s' in the same run", [tool_name, earlier])
}

approval_reasons contains msg if {
	tool.requires_approval == true
	not approved
	msg := sprintf("'%s' reaches a customer: a %s must approve every call", [tool_name, tool.approver_role])
}

approval_reasons contains msg if {
	has_amount
	amount_configured
	amount_valid
	amount > tool.approval_above_usd
	not approved
	msg := sprintf("%s USD is above %s USD: a %s must approve this call of '%s'", [
		lib.money(amount),
		lib.money(tool.approval_above_usd),
		tool.approver_role,
		tool_name,
	])
}

# ---------------------------------------------------------------------------------------------
# Obligations (only with require_approval)
# ---------------------------------------------------------------------------------------------

excluded := {requester | requester != ""}

approvers_for_role := lib.eligible_approvers({tool.approver_role}, excluded)

approval_obligations := {
	"approver_roles": [tool.approver_role],
	"eligible_approvers": approvers_for_role,
	"required_approvals": [{"role": tool.approver_role, "count": 1}],
	"escalation": [],
	"candidates": {tool.approver_role: approvers_for_role},
}
