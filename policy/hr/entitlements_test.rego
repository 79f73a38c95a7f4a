# Unit tests for baton.hr.entitlements. Run by `baton policy test` and by pytest on both OPA's
# evaluator and regorus.
package baton.hr.entitlements_test

import data.baton.hr.entitlements
import rego.v1

base := {
	"action": "grant_entitlement",
	"tenant": "acme",
	"hire": {
		"employee_id": "E1001",
		"role": "engineer",
		"department": "engineering",
		"country": "DE",
		"id_document_verified": true,
	},
	"entitlement": {"system": "github", "name": "member"},
	"requested_by": "hana",
	"approval": null,
}

with_fields(fields) := object.union(base, fields)

grant(system, name) := with_fields({"entitlement": {"system": system, "name": name}})

approved(system, name, approvers) := object.union(grant(system, name), {"approval": {
	"request_id": "apr-1",
	"action_digest": "sha256-of-the-action",
	"approvers": approvers,
	"escalation_level": 0,
}})

test_ordinary_entitlement_is_allowed if {
	d := entitlements.decision with input as base
	d.allow == true
	d.deny == []
	d.require_approval == []
	d.required_approvals == []
}

test_unknown_system_is_denied if {
	d := entitlements.decision with input as grant("mainframe", "root")
	d.allow == false
	"unknown system 'mainframe': it is not listed in data.baton.hr.systems" in d.deny
}

test_entitlement_the_system_does_not_offer_is_denied if {
	d := entitlements.decision with input as grant("github", "owner")
	"system 'github' has no entitlement 'owner'" in d.deny
}

test_entitlement_outside_the_role_is_denied if {
	d := entitlements.decision with input as grant("salesforce", "user")
	"role 'engineer' may not get salesforce:user" in d.deny
}

test_unknown_role_is_denied if {
	d := entitlements.decision with input as with_fields({"hire": object.union(base.hire, {"role": "pirate"})})
	"unknown role 'pirate': it is not listed in data.baton.hr.roles" in d.deny
}

test_unverified_identity_is_denied if {
	d := entitlements.decision with input as with_fields({"hire": object.union(base.hire, {"id_document_verified": "yes"})})
	"the new hire's identity is not verified: no access before it is" in d.deny
}

test_unknown_action_and_tenant_are_denied if {
	d := entitlements.decision with input as with_fields({"action": "drop_tables", "tenant": "nowhere"})
	"unknown action 'drop_tables': this policy only decides 'grant_entitlement'" in d.deny
	"unknown tenant 'nowhere': it is not listed in data.baton.tenants" in d.deny
}

test_missing_input_is_denied if {
	d := entitlements.decision with input as {}
	d.allow == false
	count(d.deny) >= 4
}

test_privileged_entitlement_needs_the_department_manager if {
	d := entitlements.decision with input as grant("aws", "admin")
	d.allow == true
	d.require_approval == ["aws:admin is privileged: a engineering-manager must approve it"]
	d.required_approvals == [{"role": "engineering-manager", "count": 1}]
	d.approver_roles == ["engineering-manager"]
	d.candidates == {"engineering-manager": ["maya"]}
	d.eligible_approvers == ["maya"]
}

test_privileged_entitlement_with_the_managers_approval_is_allowed if {
	d := entitlements.decision with input as approved("aws", "admin", ["maya"])
	d.allow == true
	d.deny == []
	d.require_approval == []
}

test_approval_by_someone_without_the_role_is_denied if {
	d := entitlements.decision with input as approved("aws", "admin", ["oscar"])
	d.allow == false
	count(d.deny) == 1
}

test_the_requester_cannot_approve_their_own_request if {
	d := entitlements.decision with input as object.union(approved("aws", "admin", ["maya"]), {"requested_by": "maya"})
	d.allow == false
	some reason in d.deny
	contains(reason, "segregation of duties")
}

test_an_unbound_approval_is_denied if {
	inp := object.union(approved("aws", "admin", ["maya"]), {"approval": {"action_digest": ""}})
	d := entitlements.decision with input as inp
	"the attached approval is not bound to an action digest" in d.deny
}

test_privileged_without_a_manager_in_the_directory_is_denied if {
	inp := with_fields({"hire": object.union(base.hire, {"role": "hr-partner", "department": "people"}), "entitlement": {"system": "payroll", "name": "viewer"}})
	d := entitlements.decision with input as inp
	"nobody in the directory holds 'people-manager' to approve payroll:viewer" in d.deny
}

test_unknown_system_counts_as_privileged if {
	d := entitlements.decision with input as grant("mainframe", "root")
	d.required_approvals == [{"role": "engineering-manager", "count": 1}]
}
