# Unit tests for baton.auction.award. Run by `baton policy test` and by pytest on both OPA's
# evaluator and regorus.
package baton.auction.award_test

import data.baton.auction.award
import rego.v1

base := {
	"action": "award_task",
	"tenant": "acme",
	"task": {"task_id": "msa-1", "classification": "internal", "requires": ["review:contract"]},
	"winner": {"name": "medium", "model": "baton-rules-not-an-llm"},
	"expected_cost_microusd": 6889,
}

with_fields(fields) := object.union(base, fields)

classified(c, tier) := with_fields({
	"task": {"task_id": "msa-1", "classification": c, "requires": []},
	"winner": {"name": tier, "model": "m"},
})

test_an_internal_task_to_a_cleared_tier_within_the_cap_is_allowed if {
	d := award.decision with input as base
	d.allow == true
	d.deny == []
}

test_a_confidential_task_goes_only_to_a_cleared_tier if {
	d := award.decision with input as classified("confidential", "medium")
	d.allow == false
	d.deny == ["tier 'medium' is not cleared for confidential documents"]
	ok := award.decision with input as classified("confidential", "large")
	ok.allow == true
}

test_an_unknown_classification_clears_nobody if {
	d := award.decision with input as classified("top-secret", "large")
	d.allow == false
	d.deny == ["unknown classification 'top-secret': data.baton.auction.cleared_tiers does not list it"]
}

test_a_missing_classification_is_denied if {
	d := award.decision with input as object.remove(base, ["task"])
	d.allow == false
	d.deny == ["unknown classification '(missing)': data.baton.auction.cleared_tiers does not list it"]
}

test_the_tenant_cap_applies_and_is_inclusive if {
	at := award.decision with input as with_fields({"expected_cost_microusd": 250000})
	at.allow == true
	over := award.decision with input as with_fields({"expected_cost_microusd": 250001})
	over.deny == ["the expected cost of 250001 micro-USD is above the cap of 250000 for tenant 'acme'"]
}

test_a_tenant_without_its_own_cap_gets_the_default if {
	d := award.decision with input as with_fields({"tenant": "globex", "expected_cost_microusd": 50001})
	d.deny == ["the expected cost of 50001 micro-USD is above the cap of 50000 for tenant 'globex'"]
}

test_a_cost_that_is_not_a_whole_number_is_denied if {
	every bad in [-1, 1.5, "12", null] {
		d := award.decision with input as with_fields({"expected_cost_microusd": bad})
		d.deny == ["the expected cost is missing or not a whole number of micro-dollars (expected_cost_microusd)"]
	}
}

test_unknown_tenant_and_action_are_denied if {
	d := award.decision with input as with_fields({"tenant": "nobody", "action": "grant"})
	d.allow == false
	"unknown tenant 'nobody': it is not listed in data.baton.tenants" in d.deny
	"unknown action 'grant': this policy decides award_task" in d.deny
}

test_missing_cap_data_fails_closed if {
	d := award.decision with input as base with data.baton.auction.max_task_cost_microusd as {}
	d.allow == false
	"policy data is incomplete: data.baton.auction.max_task_cost_microusd needs a 'default' cap" in d.deny
}
