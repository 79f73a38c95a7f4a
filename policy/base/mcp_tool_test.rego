# Unit tests for baton.base.mcp_tool: catalogue, per-process allow-lists, roles, tenants, call
# limits, sensitive tools (approval; refused after a flagged prompt injection), attached
# approvals, and the fast path agreeing with the detailed rules.
package baton.base.mcp_tool_test

import data.baton.base.mcp_tool
import rego.v1

lookup := {
	"tool": "mcp:crm/lookup_customer",
	"arguments": {"customer_id": "C-1"},
	"principal": {"process": "crm_assistant", "role": "crm_assistant", "tenant": "acme", "requested_by": "alice"},
	"history": {"calls": {}, "total_calls": 0, "flagged_results": []},
	"approval": null,
}

call(name) := object.union(lookup, {"tool": sprintf("mcp:crm/%s", [name])})

export := call("export_customers")

# a result of lookup_customer (a trusted tool) that the worker flagged as an injection
flagged := {"calls": {"mcp:crm/lookup_customer": 1}, "total_calls": 1, "flagged_results": [{"tool": "mcp:crm/lookup_customer", "reasons": ["orders the agent to call a tool"]}]}

# the agent loop's spelling of read_ticket (a tool marked untrusted_content), nothing flagged
read_a_ticket := {"calls": {"mcp__crm__read_ticket": 1}, "total_calls": 1}

decide(request) := d if {
	d := mcp_tool.decision with input as request
}

test_lookup_is_allowed_without_obligations if {
	decide(lookup) == {"allow": true, "deny": [], "require_approval": []}
}

test_a_tool_nobody_catalogued_is_denied if {
	d := decide(call("delete_everything"))
	d.allow == false
	d.deny == ["unknown MCP tool 'mcp:crm/delete_everything': it is not in data.baton.mcp.servers.crm.tools"]
}

test_an_unknown_server_is_denied if {
	d := decide(object.union(lookup, {"tool": "mcp:erp/lookup_customer"}))
	d.deny == ["unknown MCP tool 'mcp:erp/lookup_customer': it is not in data.baton.mcp.servers.erp.tools"]
}

test_the_agent_loops_spelling_names_the_same_tool if {
	decide(object.union(lookup, {"tool": "mcp__crm__lookup_customer"})) == {"allow": true, "deny": [], "require_approval": []}
	d := decide(object.union(lookup, {"tool": "mcp__crm__export_customers"}))
	d.require_approval == ["'mcp:crm/export_customers' is a sensitive tool: a support-lead must approve this call"]
}

test_malformed_names_are_unknown_tools if {
	every name in ["mcp:crm", "mcp:crm/a/b", "mcp__crm", "crm__lookup_customer", "lookup_customer", 7] {
		decide(object.union(lookup, {"tool": name})).allow == false
	}
}

test_allow_list_refuses_a_tool_the_process_may_not_use if {
	support := {"process": "support", "role": "l2_researcher", "tenant": "acme", "requested_by": "alice"}
	decide(object.union(lookup, {"principal": support})).allow == true
	d := decide(object.union(call("sync_ledger"), {"principal": support}))
	d.deny == [
		"agent role 'l2_researcher' may not call the MCP tool 'mcp:crm/sync_ledger' (allowed: crm_assistant)",
		"process 'support' may not use the MCP tool 'mcp:crm/sync_ledger' (its allow-list: crm/lookup_customer, crm/read_ticket)",
	]
}

test_a_process_without_an_allow_list_may_use_nothing if {
	d := decide(object.union(lookup, {"principal": {"process": "hr_onboarding", "role": "crm_assistant", "tenant": "acme"}}))
	d.deny == ["process 'hr_onboarding' may not use the MCP tool 'mcp:crm/lookup_customer' (its allow-list: none)"]
}

test_role_must_be_allowed_the_tool if {
	d := decide(object.union(lookup, {"principal": {"process": "crm_assistant", "role": "intruder", "tenant": "acme"}}))
	d.deny == ["agent role 'intruder' may not call the MCP tool 'mcp:crm/lookup_customer' (allowed: l2_researcher, crm_assistant)"]
}

test_unknown_tenant_is_denied if {
	d := decide(object.union(lookup, {"principal": {"process": "crm_assistant", "role": "crm_assistant", "tenant": "initech"}}))
	d.deny == ["unknown tenant 'initech': it is not listed in data.baton.tenants"]
}

test_call_limits if {
	decide(object.union(lookup, {"history": {"calls": {"mcp:crm/lookup_customer": 9}, "total_calls": 9}})).allow == true
	d := decide(object.union(lookup, {"history": {"calls": {"mcp:crm/lookup_customer": 10}, "total_calls": 10}}))
	d.deny == ["call limit: 'mcp:crm/lookup_customer' may be called 10 times per run and was called 10 times already"]
	r := decide(object.union(lookup, {"history": {"calls": {}, "total_calls": 30}}))
	r.deny == ["call limit: a run may make 30 MCP tool calls and made 30 already"]
}

test_history_counts_must_be_whole_numbers if {
	decide(object.union(lookup, {"history": {"total_calls": "many"}})).allow == false
}

test_sensitive_tool_needs_a_support_lead if {
	d := decide(export)
	d.allow == true
	d.require_approval == ["'mcp:crm/export_customers' is a sensitive tool: a support-lead must approve this call"]
	d.required_approvals == [{"role": "support-lead", "count": 1}]
	d.candidates == {"support-lead": ["sam"]}
}

test_sensitive_tool_is_refused_after_a_flagged_result if {
	d := decide(object.union(export, {"history": flagged}))
	d.allow == false
	d.deny == ["'mcp:crm/export_customers' is a sensitive tool and this run read a result flagged as a prompt injection (from mcp:crm/lookup_customer): refused"]
	d.require_approval == []
}

test_sensitive_tool_is_refused_after_untrusted_content_even_unflagged if {
	d := decide(object.union(export, {"history": read_a_ticket}))
	d.deny == ["'mcp:crm/export_customers' is a sensitive tool and this run read untrusted content (from mcp:crm/read_ticket): refused"]
	approved := object.union(export, {"history": read_a_ticket, "approval": {"action_digest": "d", "approvers": ["sam"]}})
	decide(approved).allow == false
}

test_a_tool_called_zero_times_taints_nothing if {
	decide(object.union(export, {"history": {"calls": {"mcp:crm/read_ticket": 0}}})).require_approval != []
}

test_an_approval_does_not_unblock_a_sensitive_tool_after_an_injection if {
	approved := object.union(export, {"history": flagged, "approval": {"action_digest": "d", "approvers": ["sam"]}})
	decide(approved).allow == false
}

test_ordinary_tools_still_run_after_a_flagged_result if {
	decide(object.union(lookup, {"history": flagged})).allow == true
}

test_malformed_flags_count_as_a_flag if {
	decide(object.union(export, {"history": {"flagged_results": "none"}})).allow == false
}

test_bound_approval_by_a_support_lead_allows if {
	approved := object.union(export, {"approval": {"action_digest": "sha256-of-the-call", "approvers": ["sam"]}})
	decide(approved) == {"allow": true, "deny": [], "require_approval": []}
}

test_the_requester_cannot_approve_their_own_export if {
	by_sam := object.union(export, {
		"principal": {"process": "crm_assistant", "role": "crm_assistant", "tenant": "acme", "requested_by": "sam"},
		"approval": {"action_digest": "d", "approvers": ["sam"]},
	})
	count(decide(by_sam).require_approval) == 1
}

test_unbound_approval_is_denied if {
	d := decide(object.union(export, {"approval": {"approvers": ["sam"]}}))
	d.deny == ["the approval attached to the call of 'mcp:crm/export_customers' is not bound to an action digest"]
}

test_sensitive_tool_without_approver_role_is_denied if {
	d := decide(export) with data.baton.mcp.servers.crm.tools.export_customers as {"max_calls_per_run": 1, "sensitive": true}
	d.deny == ["policy data is incomplete: the sensitive MCP tool 'mcp:crm/export_customers' needs an approver_role"]
}

test_fast_path_agrees_with_the_detailed_rules if {
	every request in [lookup, export, call("nope"), object.union(export, {"history": flagged}), object.union(export, {"history": read_a_ticket})] {
		fast := mcp_tool.deny with input as request
		detailed := mcp_tool.problems with input as request
		fast == detailed
	}
}

# the agent loop's history names the flagged tool as the model saw it
test_a_flagged_result_in_the_agent_loops_spelling_blocks_too if {
	looped := {"calls": {"mcp__crm__lookup_customer": 1}, "total_calls": 1, "flagged_results": [{"tool": "mcp__crm__lookup_customer", "reasons": ["orders the agent to call a tool"]}]}
	d := decide(object.union(export, {"tool": "mcp__crm__export_customers", "history": looped}))
	d.allow == false
	d.deny == ["'mcp:crm/export_customers' is a sensitive tool and this run read a result flagged as a prompt injection (from mcp:crm/lookup_customer): refused"]
}
