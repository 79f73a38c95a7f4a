# May this agent call this MCP tool now, and who must approve it first? Queried before every
# governed MCP tool call (activities/mcp_tools.py) as data.baton.base.mcp_tool.decision.
#
# Input (the tool may be named "mcp:<server>/<tool>", or "mcp__<server>__<tool>" as the agent
# loop's models see it: OpenAI function names allow only letters, digits, _ and -):
#   {"tool": "mcp:crm/export_customers", "arguments": {"destination": "..."},
#    "principal": {"process": "crm_assistant", "role": "crm_assistant", "tenant": "acme",
#                  "requested_by": "alice"},
#    "history": {"calls": {"mcp:crm/read_ticket": 1}, "total_calls": 1,
#                "flagged_results": [{"tool": "mcp:crm/read_ticket", "reasons": ["..."]}]},
#    "approval": null | {"action_digest": "...", "approvers": ["sam"]}}
#
# `history` is the run so far, as the agent loop keeps it (workflows/contracts/tools.py
# ToolHistory): calls per tool and in total; `flagged_results` (optional) are the earlier results
# the worker flagged as a prompt injection (activities/mcp_tools.py marks them in the result's
# data; the loop adds them to the history), their tools in either spelling.
#
# Rules (data.baton.mcp in policy/data/mcp.json):
#   * the tool must be in the catalogue (data.baton.mcp.servers.<server>.tools.<tool>): a tool
#     a server lists but nobody put there is refused;
#   * allow-list per process: data.baton.mcp.allow.<process> lists "server/tool" or "server/*";
#   * the agent's role must be among the tool's roles (when the tool lists roles);
#   * the tenant must be known (data.baton.tenants);
#   * per-tool and per-run call limits;
#   * a sensitive tool is refused once the run has read untrusted content: a result flagged as a
#     prompt injection, or any result of a tool marked `untrusted_content` (text third parties
#     wrote, which may carry instructions nobody detected); otherwise it needs one approver
#     holding the tool's approver_role (never the requester), unless an approval bound to the
#     call's digest is attached.
package baton.base.mcp_tool

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

# [server, tool] of a governed MCP tool name, in either spelling; undefined for anything else.
parse(name) := [parts[0], parts[1]] if {
	is_string(name)
	startswith(name, "mcp:")
	parts := split(substring(name, 4, -1), "/")
	count(parts) == 2
}

parse(name) := [parts[1], parts[2]] if {
	is_string(name)
	parts := split(name, "__")
	count(parts) == 3
	parts[0] == "mcp"
}

default server_name := ""

server_name := parse(input.tool)[0]

default bare_name := ""

bare_name := parse(input.tool)[1]

tool := data.baton.mcp.servers[server_name].tools[bare_name]

# The name policy messages and allow-lists use: "mcp:<server>/<tool>".
tool_name := sprintf("mcp:%s/%s", [server_name, bare_name]) if {
	server_name != ""
	bare_name != ""
} else := lib.input_text(["tool"])

server_and_name := sprintf("%s/%s", [server_name, bare_name])

process_name := lib.input_text(["principal", "process"])

role_name := lib.input_text(["principal", "role"])

deny := set() if clean else := problems

require_approval := set() if {
	clean
	not approval_needed
} else := approval_reasons

clean if {
	tool_known
	process_allowed
	role_allowed
	tenant_known
	run_limit_configured
	within_tool_limit
	within_run_limit
	not blocked_after_injection
	not blocked_after_untrusted
	sensitive_configured
	approval_well_formed
}

# ---------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------

tool_known if is_object(tool)

allow_list := object.get(data.baton.mcp.allow, [process_name], [])

allow_list_text := concat(", ", [e | some e in allow_list; is_string(e)]) if {
	is_array(allow_list)
	count(allow_list) > 0
} else := "none"

process_allowed if {
	some entry in allow_list
	entry in {server_and_name, sprintf("%s/*", [server_name])}
}

restricts_roles if is_array(tool.roles)

role_allowed if {
	tool_known
	not restricts_roles
}

role_allowed if input.principal.role in tool.roles

tenant_known if is_object(data.baton.tenants[input.principal.tenant])

run_limit_configured if {
	is_number(data.baton.mcp.max_calls_per_run)
	data.baton.mcp.max_calls_per_run == floor(data.baton.mcp.max_calls_per_run)
	data.baton.mcp.max_calls_per_run >= 0
	is_number(tool.max_calls_per_run)
	tool.max_calls_per_run == floor(tool.max_calls_per_run)
	tool.max_calls_per_run >= 0
}

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
	total_so_far < data.baton.mcp.max_calls_per_run
}

sensitive if tool.sensitive == true

# Every flagged result so far; anything but a list is treated as a flag (fail closed).
flagged := object.get(input, ["history", "flagged_results"], [])

injection_seen if {
	is_array(flagged)
	count(flagged) > 0
}

injection_seen if not is_array(flagged)

# Tools of the untrusted kind this run has called (history.calls, in either spelling).
untrusted_read contains sprintf("mcp:%s/%s", [key[0], key[1]]) if {
	some called, n in object.get(input, ["history", "calls"], {})
	is_number(n)
	n > 0
	key := parse(called)
	data.baton.mcp.servers[key[0]].tools[key[1]].untrusted_content == true
}

untrusted_seen if count(untrusted_read) > 0

flagged_tools := concat(", ", sort({governed_name(t) |
	is_array(flagged)
	some f in flagged
	t := object.get(f, ["tool"], "?")
	is_string(t)
}))

# A tool's name as policy messages give it ("mcp:<server>/<tool>"), from either spelling.
governed_name(name) := sprintf("mcp:%s/%s", [p[0], p[1]]) if {
	p := parse(name)
} else := name

blocked_after_injection if {
	sensitive
	injection_seen
}

blocked_after_untrusted if {
	sensitive
	untrusted_seen
}

approval_configured if {
	is_string(tool.approver_role)
	tool.approver_role != ""
}

sensitive_configured if not sensitive

sensitive_configured if approval_configured

approval_needed if {
	sensitive
	not injection_seen
	not untrusted_seen
	not approved
}

approval_attached if is_object(input.approval)

approval_well_formed if not approval_attached

approval_well_formed if lib.named(input.approval.action_digest)

requester := lib.input_string(["principal", "requested_by"])

approved if {
	approval_attached
	approval_configured
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
	msg := sprintf("unknown MCP tool '%s': it is not in data.baton.mcp.servers.%s.tools", [tool_name, server_name])
}

problems contains msg if {
	tool_known
	not process_allowed
	msg := sprintf("process '%s' may not use the MCP tool '%s' (its allow-list: %s)", [
		process_name,
		tool_name,
		allow_list_text,
	])
}

problems contains msg if {
	tool_known
	not role_allowed
	msg := sprintf("agent role '%s' may not call the MCP tool '%s' (allowed: %s)", [
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
	msg := sprintf("policy data is incomplete: data.baton.mcp.max_calls_per_run and the max_calls_per_run of '%s' must be whole numbers", [tool_name])
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
	msg := sprintf("call limit: a run may make %d MCP tool calls and made %d already", [
		data.baton.mcp.max_calls_per_run,
		total_so_far,
	])
}

problems contains msg if {
	blocked_after_injection
	msg := sprintf("'%s' is a sensitive tool and this run read a result flagged as a prompt injection (from %s): refused", [
		tool_name,
		flagged_tools,
	])
}

problems contains msg if {
	blocked_after_untrusted
	msg := sprintf("'%s' is a sensitive tool and this run read untrusted content (from %s): refused", [
		tool_name,
		concat(", ", sort(untrusted_read)),
	])
}

problems contains msg if {
	not approval_well_formed
	msg := sprintf("the approval attached to the call of '%s' is not bound to an action digest", [tool_name])
}

problems contains msg if {
	sensitive
	not approval_configured
	msg := sprintf("policy data is incomplete: the sensitive MCP tool '%s' needs an approver_role", [tool_name])
}

approval_reasons contains msg if {
	approval_needed
	msg := sprintf("'%s' is a sensitive tool: a %s must approve this call", [tool_name, tool.approver_role])
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
