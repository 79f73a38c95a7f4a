# Unit tests for baton.support.ticket_update (OPA's evaluator and regorus, from pytest).
package baton.support.ticket_update_test

import data.baton.support.ticket_update
import rego.v1

base := {
	"action": "update_ticket",
	"tenant": "acme",
	"case": {"case_id": "C-1", "priority": "P2", "customer_value_usd": 1200, "category": "billing"},
	"update": {"status": "resolved", "reply_chars": 120},
	"requested_by": "support-queue",
	"approval": null,
}

with_case(fields) := object.union(base, {"case": object.union(base.case, fields)})

approved(inp, approvers) := object.union(inp, {"approval": {
	"request_id": "apr-1",
	"action_digest": "sha256-of-the-update",
	"approvers": approvers,
	"escalation_level": 0,
}})

test_ordinary_update_is_allowed if {
	d := ticket_update.decision with input as base
	d.allow == true
	d.deny == []
	d.require_approval == []
}

test_high_value_customer_needs_a_support_lead if {
	d := ticket_update.decision with input as with_case({"customer_value_usd": 50000})
	d.allow == true
	count(d.require_approval) == 1
	d.approver_roles == ["support-lead"]
	d.required_approvals == [{"role": "support-lead", "count": 1}]
	"sam" in d.eligible_approvers
}

test_cancellation_needs_a_support_lead if {
	d := ticket_update.decision with input as with_case({"category": "cancellation"})
	count(d.require_approval) == 1
}

test_support_lead_approval_allows_it if {
	d := ticket_update.decision with input as approved(with_case({"customer_value_usd": 50000}), ["sam"])
	d.deny == []
	d.require_approval == []
}

test_approval_by_someone_without_the_role_is_denied if {
	d := ticket_update.decision with input as approved(with_case({"customer_value_usd": 50000}), ["alice"])
	count(d.deny) > 0
}

test_resolving_without_a_reply_is_denied if {
	d := ticket_update.decision with input as object.union(base, {"update": {"status": "resolved", "reply_chars": 0}})
	d.allow == false
	"a ticket is not resolved without a reply to the customer" in d.deny
}

test_unknown_status_is_denied if {
	d := ticket_update.decision with input as object.union(base, {"update": {"status": "deleted", "reply_chars": 3}})
	d.allow == false
}

test_unknown_tenant_is_denied if {
	d := ticket_update.decision with input as object.union(base, {"tenant": "nobody"})
	d.allow == false
}

test_missing_value_fails_closed if {
	d := ticket_update.decision with input as with_case({"customer_value_usd": "a lot"})
	d.allow == false
}

test_unknown_action_is_denied if {
	d := ticket_update.decision with input as object.union(base, {"action": "delete_ticket"})
	d.allow == false
}
