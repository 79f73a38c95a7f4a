# Decides whether ONE final action of a customer onboarding may be committed to a system of
# record, and whether a human must approve it first. Asked twice: over the whole plan before any
# commit (the workflow's policy preflight), then again inside each commit's write
# transaction, as data.baton.customer.onboarding.decision.
#
# Input (built by workflows/contracts/customer.py customer_policy_input):
#   {"action": "commit_customer_action", "tenant": "acme",
#    "kind": "intro_email" | "discount" | "onboarding_task",
#    "customer": {"id": "cust-globex", "country": "DE", "region": "eu"},
#    "hosting_region": "eu", "sanctions_screened": true, "dpa_signed": false,
#    "discount_pct": 15, "requested_by": "crm:trigger",
#    "approval": null | {"request_id": "...", "action_digest": "...", "approvers": ["oscar"],
#                        "escalation_level": 0}}
#
# Rules (data.baton.customers in policy/data/customer.json):
#   * data residency: the workspace is hosted in one of data.baton.customers.hosting_regions,
#     and in the customer's own region unless a DPA with standard contractual clauses is signed;
#   * legal: the customer was screened against the sanctions lists and is not in an embargoed
#     country;
#   * discounts: up to self_approved_max_pct needs nobody; up to manager_max_pct needs a
#     manager_role; up to hard_cap_pct needs an executive_role; above the cap it is denied.
#     With a valid approval attached (bound to the action, by a holder of the role, never the
#     requester) it is allowed.
#
# Fail closed: every check is "deny unless a positive fact holds" (zero-argument rules).
package baton.customer.onboarding

import data.baton.lib
import rego.v1

config := data.baton.customers

limits := config.discounts

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

kind := lib.input_string(["kind"])

customer_id := lib.input_text(["customer", "id"])

customer_region := lib.input_string(["customer", "region"])

hosting_region := lib.input_string(["hosting_region"])

# ---------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------

action_known if input.action == "commit_customer_action"

tenant_known if is_object(data.baton.tenants[input.tenant])

kind_known if kind in config.action_kinds

hosting_region_known if hosting_region in config.hosting_regions

customer_region_named if lib.named(customer_region)

in_customer_region if {
	customer_region_named
	hosting_region == customer_region
}

dpa_signed if input.dpa_signed == true

residency_ok if in_customer_region

residency_ok if dpa_signed

sanctions_screened if input.sanctions_screened == true

country_named if lib.named(input.customer.country)

embargoed if input.customer.country in config.embargoed_countries

not_embargoed if {
	country_named
	not embargoed
}

is_discount if kind == "discount"

pct_valid if {
	is_number(input.discount_pct)
	input.discount_pct >= 0
}

within_self if {
	pct_valid
	input.discount_pct <= limits.self_approved_max_pct
}

within_manager if {
	pct_valid
	input.discount_pct <= limits.manager_max_pct
}

within_cap if {
	pct_valid
	input.discount_pct <= limits.hard_cap_pct
}

requester_named if lib.named(input.requested_by)

required_roles := {limits.manager_role} if {
	is_discount
	within_manager
	not within_self
} else := {limits.executive_role} if {
	is_discount
	within_cap
	not within_manager
} else := set()

required_approvals := [{"role": role, "count": 1} | some role in sort(required_roles)]

excluded := {person |
	person := input.requested_by
	lib.named(person)
}

candidates := {role: lib.eligible_approvers({role}, excluded) | some role in required_roles}

eligible_approvers := lib.eligible_approvers(required_roles, excluded)

# ---------------------------------------------------------------------------------------------
# The attached approval
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
	msg := sprintf("unknown action '%s': this policy only decides 'commit_customer_action'", [
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
	not kind_known
	msg := sprintf("unknown action kind '%s'", [lib.input_text(["kind"])])
}

deny contains msg if {
	not customer_region_named
	msg := sprintf("data residency: the region of customer %s is unknown", [customer_id])
}

deny contains msg if {
	not hosting_region_known
	msg := sprintf("data residency: '%s' is not a hosting region", [lib.input_text(["hosting_region"])])
}

deny contains msg if {
	customer_region_named
	hosting_region_known
	not residency_ok
	msg := sprintf(
		"data residency: customer %s is in region '%s'; its data may not be hosted in '%s' without a signed DPA with standard contractual clauses",
		[customer_id, customer_region, hosting_region],
	)
}

deny contains msg if {
	not sanctions_screened
	msg := sprintf("legal: customer %s has not been screened against the sanctions lists", [customer_id])
}

deny contains msg if {
	not not_embargoed
	msg := sprintf("legal: customer %s is in an embargoed or unknown country '%s'", [
		customer_id,
		lib.input_text(["customer", "country"]),
	])
}

deny contains msg if {
	not requester_named
	msg := "requested_by must name a person or service"
}

deny contains msg if {
	is_discount
	not pct_valid
	msg := "discount_pct must be a number >= 0"
}

deny contains msg if {
	is_discount
	pct_valid
	not within_cap
	msg := "discount above the hard cap: no approval can allow it"
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
	some role in required_roles
	count(candidates[role]) == 0
	msg := sprintf("nobody in the directory holds '%s' to approve this discount", [role])
}

# ---------------------------------------------------------------------------------------------
# require_approval (only when nothing denies)
# ---------------------------------------------------------------------------------------------

require_approval contains msg if {
	some role in required_roles
	not valid_approval
	msg := sprintf("discount above the self-approval limit: a %s must approve it", [role])
}
