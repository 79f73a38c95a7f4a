# Unit tests for baton.base.tool_call: catalogue and roles, tenants, per-tool and per-run call
# limits, amounts (approval threshold, hard limit, malformed), attached approvals, the
# obligations of a require_approval, and the fast path agreeing with the detailed rules.
package baton.base.tool_call_test

import data.baton.base.tool_call
import rego.v1

lookup := {
	"tool": "lookup_order",
	"arguments": {"order_id": "O-7"},
	"principal": {"role": "l2_researcher", "tenant": "acme", "requested_by": "support-queue"},
	"history": {"calls": {"lookup_order": 3}, "total_calls": 5},
	"approval": null,
}

refund(amount) := object.union(lookup, {"tool": "issue_refund", "arguments": {"order_id": "O-7", "amount_usd": amount}})

approved_refund(amount, approvers) := object.union(refund(amount), {"approval": {"action_digest": "sha256-of-the-call", "approvers": approvers}})

decide(request) := d if {
	d := tool_call.decision with input as request
}

test_lookup_is_allowed_without_obligations if {
	decide(lookup) == {"allow": true, "deny": [], "require_approval": []}
}

test_unknown_tool_is_denied if {
	d := decide(object.union(lookup, {"tool": "wire_money"}))
	d.allow == false
	d.deny == ["unknown tool 'wire_money': it is not in data.baton.tools.catalogue"]
}

test_role_must_be_allowed_the_tool if {
	d := decide(object.union(lookup, {"tool": "send_customer_email"}))
	d.deny == ["agent role 'l2_researcher' may not call the tool 'send_customer_email' (allowed: customer_notifier)"]
}

test_unknown_tenant_is_denied if {
	d := decide(object.union(lookup, {"principal": {"tenant": "initech"}}))
	d.deny == ["unknown tenant 'initech': it is not listed in data.baton.tenants"]
}

test_per_tool_call_limit if {
	decide(object.union(lookup, {"history": {"calls": {"lookup_order": 19}}})).allow == true
	d := decide(object.union(lookup, {"history": {"calls": {"lookup_order": 20}}}))
	d.deny == ["call limit: 'lookup_order' may be called 20 times per run and was called 20 times already"]
}

test_per_run_call_limit if {
	d := decide(object.union(lookup, {"history": {"total_calls": 40}}))
	d.deny == ["call limit: a run may make 40 tool calls and made 40 already"]
}

test_missing_history_counts_as_a_first_call if {
	decide(object.remove(lookup, ["history"])).allow == true
}

test_history_counts_must_be_whole_numbers if {
	d := decide(object.union(lookup, {"history": {"total_calls": "many"}}))
	d.deny == ["history counts must be whole numbers >= 0 (history.calls.<tool>, history.total_calls)"]
	decide(object.union(lookup, {"history": {"calls": {"lookup_order": 1.5}}})).allow == false
}

test_small_refund_is_allowed if {
	decide(refund(100)) == {"allow": true, "deny": [], "require_approval": []}
}

test_refund_above_threshold_needs_a_support_lead if {
	d := decide(refund(120))
	d.allow == true
	d.require_approval == ["120.00 USD is above 100.00 USD: a support-lead must approve this call of 'issue_refund'"]
	d.required_approvals == [{"role": "support-lead", "count": 1}]
	d.approver_roles == ["support-lead"]
	d.eligible_approvers == ["sam"]
	d.candidates == {"support-lead": ["sam"]}
	d.escalation == []
}

test_requester_is_not_offered_as_approver if {
	d := decide(object.union(refund(120), {"principal": {"requested_by": "sam"}}))
	d.eligible_approvers == []
}

test_refund_above_hard_limit_is_denied if {
	d := decide(refund(5000.01))
	d.deny == ["5000.01 USD exceeds the limit of 5000.00 USD for 'issue_refund'"]
}

test_refund_amount_must_be_a_number if {
	decide(refund("120")).deny == ["argument 'amount_usd' of 'issue_refund' must be a number >= 0"]
	decide(refund(-1)).allow == false
	decide(object.union(lookup, {"tool": "issue_refund"})).allow == false
}

test_bound_approval_by_a_support_lead_allows if {
	decide(approved_refund(120, ["sam"])) == {"allow": true, "deny": [], "require_approval": []}
}

test_approval_by_the_wrong_person_still_requires_approval if {
	count(decide(approved_refund(120, ["carol"])).require_approval) == 1
	requester_sam := object.union(approved_refund(120, ["sam"]), {"principal": {"requested_by": "sam"}})
	count(decide(requester_sam).require_approval) == 1
}

test_unbound_approval_is_denied if {
	d := decide(object.union(refund(120), {"approval": {"approvers": ["sam"]}}))
	d.deny == ["the approval attached to the call of 'issue_refund' is not bound to an action digest"]
}

test_broken_limits_data_denies if {
	d := decide(lookup) with data.baton.tools.max_calls_per_run as "lots"
	d.deny == ["policy data is incomplete: data.baton.tools.max_calls_per_run and the max_calls_per_run of 'lookup_order' must be whole numbers"]
}

test_fast_path_agrees_with_the_detailed_rules if {
	every request in [lookup, refund(50), refund(120), refund(9000), approved_refund(120, ["sam"])] {
		fast := tool_call.deny with input as request
		detailed := tool_call.problems with input as request
		fast == detailed
	}
}

# -- the shipped example rules over the run's history (agents that act, workflows/agent_loop.py)

resolver := {
	"tool": "propose_credit",
	"arguments": {"customer": "c-1", "case_id": "K-1", "amount_usd": 40, "reason": "late"},
	"principal": {"role": "case_resolver", "agent": "case_resolver", "process": "agent_run", "tenant": "acme", "requested_by": "alice"},
	"history": {"calls": {}, "total_calls": 0},
	"approval": null,
}

with_calls(request, calls) := object.union(request, {"history": {"calls": calls, "total_calls": sum([n | some n in calls])}})

email := object.union(resolver, {"tool": "email_customer", "arguments": {"customer": "c-1", "subject": "s", "body": "b"}})

test_no_more_than_three_refunds_per_case if {
	decide(with_calls(resolver, {"propose_credit": 2})).allow == true
	d := decide(with_calls(resolver, {"propose_credit": 2, "issue_refund": 1}))
	d.deny == ["refund limit: a case may get 3 refunds or credits and got 3 already"]
	decide(with_calls(resolver, {"propose_credit": 3})).allow == false
}

test_refund_limit_ignores_other_tools if {
	decide(with_calls(object.union(resolver, {"tool": "lookup_customer", "arguments": {"customer": "c-1"}}), {"propose_credit": 3})).allow == true
}

test_approval_before_any_email_to_a_customer if {
	d := decide(email)
	d.allow == true
	d.require_approval == ["'email_customer' reaches a customer: a support-lead must approve every call"]
	d.eligible_approvers == ["sam"]
	approved := object.union(email, {"approval": {"action_digest": "sha256-of-the-call", "approvers": ["sam"]}})
	decide(approved) == {"allow": true, "deny": [], "require_approval": []}
}

test_never_email_after_reading_internal_notes if {
	d := decide(with_calls(email, {"read_internal_notes": 1}))
	d.deny == ["'email_customer' may never be called after 'read_internal_notes' in the same run"]
	# reading the notes is fine; only the email after it is refused
	decide(with_calls(object.union(resolver, {"tool": "read_internal_notes", "arguments": {"customer": "c-1"}}), {})).allow == true
}

test_fast_path_agrees_on_history_rules if {
	every request in [with_calls(resolver, {"propose_credit": 3}), with_calls(email, {"read_internal_notes": 1}), email] {
		fast := tool_call.deny with input as request
		detailed := tool_call.problems with input as request
		fast == detailed
	}
}

# -- customer onboarding's plan carried out by an agent (activities/customer_tools.py)

executor := {
	"tool": "grant_customer_entitlement",
	"arguments": {"plan_id": "9f2c", "action_key": "discount"},
	"principal": {"role": "onboarding_executor", "agent": "onboarding_executor", "process": "customer_onboarding", "tenant": "acme", "requested_by": "crm:trigger"},
	"history": {"calls": {}, "total_calls": 0},
	"approval": null,
}

welcome := object.union(executor, {"tool": "send_welcome_email", "arguments": {"plan_id": "9f2c", "action_key": "intro_email"}})

test_the_onboarding_executor_grants_and_sends_the_welcome_email if {
	decide(executor) == {"allow": true, "deny": [], "require_approval": []}
	decide(welcome) == {"allow": true, "deny": [], "require_approval": []}
}

test_only_the_onboarding_executor_may_grant_entitlements if {
	d := decide(object.union(resolver, {"tool": "grant_customer_entitlement", "arguments": executor.arguments}))
	d.deny == ["agent role 'case_resolver' may not call the tool 'grant_customer_entitlement' (allowed: onboarding_executor)"]
}

test_one_welcome_email_per_run if {
	d := decide(with_calls(welcome, {"grant_customer_entitlement": 1, "send_welcome_email": 1}))
	d.deny == ["call limit: 'send_welcome_email' may be called 1 times per run and was called 1 times already"]
}
