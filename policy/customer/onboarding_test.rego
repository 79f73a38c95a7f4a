# Unit tests for baton.customer.onboarding. Run by `baton policy test` and by pytest on both
# OPA's evaluator and regorus.
package baton.customer.onboarding_test

import data.baton.customer.onboarding
import rego.v1

base := {
	"action": "commit_customer_action",
	"tenant": "acme",
	"kind": "intro_email",
	"customer": {"id": "cust-globex", "country": "DE", "region": "eu"},
	"hosting_region": "eu",
	"sanctions_screened": true,
	"dpa_signed": false,
	"discount_pct": 0,
	"requested_by": "crm:trigger",
	"approval": null,
}

with_fields(fields) := object.union(base, fields)

# object.union merges nested objects: replace the customer as a whole
with_customer(customer) := object.union(object.remove(base, ["customer"]), {"customer": customer})

discount(pct) := with_fields({"kind": "discount", "discount_pct": pct})

approved(pct, approvers) := object.union(discount(pct), {"approval": {
	"request_id": "apr-1",
	"action_digest": "sha256-of-the-action",
	"approvers": approvers,
	"escalation_level": 0,
}})

test_intro_email_in_the_customers_region_is_allowed if {
	d := onboarding.decision with input as base
	d.allow == true
	d.deny == []
	d.require_approval == []
	d.required_approvals == []
}

test_hosting_outside_the_customers_region_is_denied if {
	d := onboarding.decision with input as with_fields({"hosting_region": "us"})
	d.allow == false
	some reason in d.deny
	startswith(reason, "data residency: customer cust-globex is in region 'eu'; its data may not be hosted in 'us'")
}

test_a_signed_dpa_allows_another_region if {
	d := onboarding.decision with input as with_fields({"hosting_region": "us", "dpa_signed": true})
	d.allow == true
}

test_unknown_hosting_region_is_denied if {
	d := onboarding.decision with input as with_fields({"hosting_region": "moon", "dpa_signed": true})
	"data residency: 'moon' is not a hosting region" in d.deny
}

test_missing_customer_region_is_denied if {
	d := onboarding.decision with input as with_customer({"id": "c", "country": "DE"})
	"data residency: the region of customer c is unknown" in d.deny
}

test_unscreened_customer_is_denied if {
	d := onboarding.decision with input as with_fields({"sanctions_screened": false})
	"legal: customer cust-globex has not been screened against the sanctions lists" in d.deny
}

test_screening_must_be_a_boolean_true if {
	d := onboarding.decision with input as with_fields({"sanctions_screened": "yes"})
	d.allow == false
}

test_embargoed_country_is_denied if {
	d := onboarding.decision with input as with_customer({"id": "c", "country": "KP", "region": "eu"})
	"legal: customer c is in an embargoed or unknown country 'KP'" in d.deny
}

test_small_discount_needs_nobody if {
	d := onboarding.decision with input as discount(10)
	d.allow == true
	d.require_approval == []
}

test_discount_above_ten_needs_a_sales_manager if {
	d := onboarding.decision with input as discount(15)
	d.allow == true
	d.require_approval == ["discount above the self-approval limit: a sales-manager must approve it"]
	d.required_approvals == [{"role": "sales-manager", "count": 1}]
	d.candidates == {"sales-manager": ["oscar"]}
}

test_discount_above_twenty_needs_the_cfo if {
	d := onboarding.decision with input as discount(25)
	d.approver_roles == ["cfo"]
	d.candidates == {"cfo": ["dave", "ivan"]}
}

test_discount_above_the_cap_is_denied if {
	d := onboarding.decision with input as discount(31)
	"discount above the hard cap: no approval can allow it" in d.deny
}

test_negative_or_text_discount_is_denied if {
	"discount_pct must be a number >= 0" in onboarding.decision.deny with input as discount(-1)
	"discount_pct must be a number >= 0" in onboarding.decision.deny with input as discount("15")
}

test_the_managers_approval_allows_the_discount if {
	d := onboarding.decision with input as approved(15, ["oscar"])
	d.allow == true
	d.require_approval == []
}

test_an_approval_by_someone_without_the_role_is_denied if {
	d := onboarding.decision with input as approved(15, ["maya"])
	d.allow == false
	some reason in d.deny
	startswith(reason, "maya cannot approve this")
}

test_a_manager_cannot_approve_what_needs_the_cfo if {
	d := onboarding.decision with input as approved(25, ["oscar"])
	d.allow == false
}

test_unknown_kind_and_action_are_denied if {
	d := onboarding.decision with input as with_fields({"action": "delete_customer", "kind": "wire_money"})
	"unknown action 'delete_customer': this policy only decides 'commit_customer_action'" in d.deny
	"unknown action kind 'wire_money'" in d.deny
}

test_empty_input_denies if {
	d := onboarding.decision with input as {}
	d.allow == false
}
