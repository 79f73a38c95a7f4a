# May the allocator award this task to this bidder? Queried by the award gate
# (activities/auction.py check_award) after the award rule picked a winner and before the winner
# starts work, as data.baton.auction.award.decision. A deny excludes that winner: the task is
# re-auctioned among the other bidders (workflows/auction.py).
#
# Input (built by activities/auction.py award_policy_input):
#   {"action": "award_task", "tenant": "acme",
#    "task": {"task_id": "msa-1", "classification": "confidential",
#             "requires": ["review:contract"]},
#    "winner": {"name": "medium", "model": "baton-rules-not-an-llm"},
#    "expected_cost_microusd": 6889}
#
# Rules (data.baton.auction in policy/data/auction.json):
#   * clearance: the winner tier must be cleared for the document's classification
#     (cleared_tiers[classification]); an unknown classification clears nobody;
#   * cost cap: the winning bid's expected cost (micro-dollars, an integer, so both engines
#     compare the same digits) must not exceed max_task_cost_microusd for the tenant, else
#     the "default" cap.
#
# Fail closed: every check is "deny unless a positive fact holds".
package baton.auction.award

import data.baton.lib
import rego.v1

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
}

cleared := data.baton.auction.cleared_tiers

caps := data.baton.auction.max_task_cost_microusd

classification := lib.input_string(["task", "classification"])

winner := lib.input_string(["winner", "name"])

tenant := lib.input_string(["tenant"])

# ---------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------

action_known if input.action == "award_task"

tenant_known if is_object(data.baton.tenants[tenant])

classification_known if is_array(cleared[classification])

winner_cleared if winner in cleared[classification]

cost_cap := caps[tenant] if {
	lib.whole_number(caps[tenant])
} else := caps["default"]

cost_given if lib.whole_number(input.expected_cost_microusd)

cap_configured if lib.whole_number(cost_cap)

within_cap if {
	cost_given
	cap_configured
	input.expected_cost_microusd <= cost_cap
}

# ---------------------------------------------------------------------------------------------
# Denials
# ---------------------------------------------------------------------------------------------

deny contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': this policy decides award_task", [lib.input_text(["action"])])
}

deny contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

deny contains msg if {
	not classification_known
	msg := sprintf("unknown classification '%s': data.baton.auction.cleared_tiers does not list it", [
		lib.input_text(["task", "classification"]),
	])
}

deny contains msg if {
	classification_known
	not winner_cleared
	msg := sprintf("tier '%s' is not cleared for %s documents", [
		lib.input_text(["winner", "name"]),
		classification,
	])
}

deny contains "the expected cost is missing or not a whole number of micro-dollars (expected_cost_microusd)" if {
	not cost_given
}

deny contains "policy data is incomplete: data.baton.auction.max_task_cost_microusd needs a 'default' cap" if {
	not cap_configured
}

deny contains msg if {
	cost_given
	cap_configured
	not within_cap
	msg := sprintf("the expected cost of %d micro-USD is above the cap of %d for tenant '%s'", [
		input.expected_cost_microusd,
		cost_cap,
		tenant,
	])
}
