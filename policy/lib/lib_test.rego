# Unit tests for the shared helpers in baton.lib.
package baton.lib_test

import data.baton.lib
import rego.v1

people := {
	"ann": {"roles": ["finance-controller"]},
	"bob": {"roles": ["cfo", "finance-controller"]},
	"cy": {"roles": []},
	"di": {},
}

test_roles_of_known_and_unknown_people if {
	lib.roles_of("bob") == {"cfo", "finance-controller"} with data.baton.directory.people as people
	lib.roles_of("nobody") == set() with data.baton.directory.people as people
	lib.roles_of("di") == set() with data.baton.directory.people as people
}

test_in_directory if {
	lib.in_directory("cy") with data.baton.directory.people as people
	not lib.in_directory("nobody") with data.baton.directory.people as people
}

test_has_any_role if {
	lib.has_any_role("bob", ["cfo"]) with data.baton.directory.people as people
	lib.has_any_role("ann", {"cfo", "finance-controller"}) with data.baton.directory.people as people
	not lib.has_any_role("ann", ["cfo"]) with data.baton.directory.people as people
	not lib.has_any_role("ann", []) with data.baton.directory.people as people
}

test_eligible_approvers_are_sorted_unique_and_exclude if {
	lib.eligible_approvers({"cfo", "finance-controller"}, set()) == ["ann", "bob"] with data.baton.directory.people as people
	lib.eligible_approvers(["finance-controller"], {"ann"}) == ["bob"] with data.baton.directory.people as people
	lib.eligible_approvers([], set()) == [] with data.baton.directory.people as people
}

test_segregation_of_duties if {
	lib.segregation_of_duties("ann", "ann", "agent:x") == {"segregation of duties: ann requested this entry and cannot approve it"}
	lib.segregation_of_duties("ann", "bob", "ann") == {"segregation of duties: ann prepared this entry and cannot approve it"}
	count(lib.segregation_of_duties("ann", "ann", "ann")) == 2
	lib.segregation_of_duties("ann", "bob", "cy") == set()
}

test_approver_problems_without_required_roles_checks_only_duties if {
	lib.approver_problems("nobody", "bob", "cy", []) == set() with data.baton.directory.people as people
	count(lib.approver_problems("bob", "bob", "cy", [])) == 1 with data.baton.directory.people as people
}

test_named if {
	lib.named("x")
	not lib.named("")
	not lib.named(null)
	not lib.named(3)
}

test_input_text_and_string if {
	lib.input_text(["a", "b"]) == "x" with input as {"a": {"b": "x"}}
	lib.input_text(["a", "b"]) == "(missing)" with input as {"a": {}}
	lib.input_text(["a"]) == "(missing)" with input as {"a": 3}
	lib.input_string(["a"]) == "" with input as {}
	lib.input_string(["a"]) == "y" with input as {"a": "y"}
}

test_money_prints_two_decimals_on_every_engine if {
	lib.money(-12.5) == "-12.50"
	lib.money(0) == "0.00"
	lib.money(0.1) == "0.10"
	lib.money(999.99) == "999.99"
	lib.money(1000) == "1000.00"
	lib.money(49999.99) == "49999.99"
	lib.money(1234567.5) == "1234567.50"
	lib.money(-1000000.01) == "-1000000.01"
	lib.money(0.004) == "0.00"
}
