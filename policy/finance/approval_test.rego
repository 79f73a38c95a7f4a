# Unit tests for baton.finance.approval: who may approve, segregation of duties (requester,
# preparer, amender), and the
# fail-closed handling of incomplete requests.
package baton.finance.approval_test

import data.baton.finance.approval
import rego.v1

request := {
	"approver": "carol",
	"requested_by": "alice",
	"preparer": "agent:reconciler",
	"amended_by": null,
	"approver_roles": ["finance-controller"],
}

decide(fields) := d if {
	d := approval.decision with input as object.union(request, fields)
}

test_controller_may_approve if {
	decide({}) == {"allow": true, "deny": []}
}

test_any_one_of_the_roles_suffices if {
	decide({"approver": "dave", "approver_roles": ["cfo", "finance-controller"]}).allow == true
	decide({"approver": "carol", "approver_roles": ["cfo", "finance-controller"]}).allow == true
}

test_cfo_may_approve_cfo_level if {
	decide({"approver": "dave", "approver_roles": ["cfo"]}).allow == true
}

test_wrong_role_is_denied if {
	d := decide({"approver_roles": ["cfo"]})
	d.allow == false
	d.deny == ["carol cannot approve this: it needs one of the roles [cfo] and carol holds [finance-controller]"]
}

test_approver_without_roles_is_denied if {
	d := decide({"approver": "erin"})
	d.deny == ["erin cannot approve this: it needs one of the roles [finance-controller] and erin holds [accountant]"]
}

test_requester_cannot_approve if {
	d := decide({"requested_by": "carol"})
	d.allow == false
	d.deny == ["segregation of duties: carol requested this entry and cannot approve it"]
}

test_preparer_cannot_approve if {
	d := decide({"preparer": "carol"})
	d.deny == ["segregation of duties: carol prepared this entry and cannot approve it"]
}

test_amender_cannot_approve if {
	d := decide({"amended_by": "carol"})
	d.allow == false
	d.deny == ["segregation of duties: carol amended this entry and cannot approve it"]
}

test_someone_else_may_approve_an_amended_entry if {
	decide({"amended_by": "frank"}) == {"allow": true, "deny": []}
	decide({"amended_by": ""}).allow == true
	approval.decision.allow == true with input as object.remove(request, ["amended_by"])
}

test_amended_by_that_is_not_a_name_is_denied if {
	decide({"amended_by": 42}).deny == ["amended_by must name who amended the entry, or be null"]
	decide({"amended_by": ["carol"]}).allow == false
}

test_escalation_roles_may_be_passed_as_approver_roles if {
	decide({"approver": "grace", "approver_roles": ["finance-controller"]}).allow == false
	decide({"approver": "grace", "approver_roles": ["cfo", "finance-controller", "ceo"]}).allow == true
}

test_unknown_approver_is_denied if {
	d := decide({"approver": "mallory"})
	d.deny == ["approver 'mallory' is not in the directory, so holds no approver role"]
}

test_directory_comes_from_data if {
	d := decide({}) with data.baton.directory.people as {"carol": {"roles": ["accountant"]}}
	d.allow == false
}

test_empty_role_list_is_denied if {
	d := decide({"approver_roles": []})
	d.deny == ["no approver role was named, so nobody can be authorised"]
}

test_role_list_that_is_not_a_list_is_denied if {
	decide({"approver_roles": "finance-controller"}).allow == false
	decide({"approver_roles": [""]}).allow == false
}

test_missing_names_are_denied if {
	d := approval.decision with input as {"approver_roles": ["finance-controller"]}
	d.deny == [
		"the decision does not name an approver",
		"the request does not name who prepared it (preparer)",
		"the request does not name who requested it (requested_by)",
	]
}

test_allow_is_a_strict_boolean if {
	is_boolean(decide({}).allow)
	is_boolean(decide({"approver": ""}).allow)
}
