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
	lib.segregation_of_duties("ann", "ann", "agent:x", "") == {"segregation of duties: ann requested this entry and cannot approve it"}
	lib.segregation_of_duties("ann", "bob", "ann", "") == {"segregation of duties: ann prepared this entry and cannot approve it"}
	lib.segregation_of_duties("ann", "bob", "cy", "ann") == {"segregation of duties: ann amended this entry and cannot approve it"}
	count(lib.segregation_of_duties("ann", "ann", "ann", "ann")) == 3
	lib.segregation_of_duties("ann", "bob", "cy", "") == set()
}

test_approver_problems_without_required_roles_checks_only_duties if {
	lib.approver_problems("nobody", "bob", "cy", "", []) == set() with data.baton.directory.people as people
	count(lib.approver_problems("bob", "bob", "cy", "", [])) == 1 with data.baton.directory.people as people
	count(lib.approver_problems("bob", "x", "cy", "bob", [])) == 1 with data.baton.directory.people as people
}

test_approver_problems_checks_roles if {
	lib.approver_problems("ann", "x", "y", "", ["finance-controller"]) == set() with data.baton.directory.people as people
	lib.approver_problems("ann", "x", "y", "", ["cfo"]) == {"ann cannot approve this: it needs one of the roles [cfo] and ann holds [finance-controller]"} with data.baton.directory.people as people
	lib.approver_problems("zed", "x", "y", "", ["cfo"]) == {"approver 'zed' is not in the directory, so holds no approver role"} with data.baton.directory.people as people
}

# ---------------------------------------------------------------------------------------------
# N-of-M approvals and escalation
# ---------------------------------------------------------------------------------------------

staff := {
	"ann": {"roles": ["finance-controller"]},
	"bob": {"roles": ["cfo", "finance-controller"]},
	"cat": {"roles": ["cfo"]},
	"dan": {"roles": ["ceo"]},
	"eve": {"roles": ["finance-controller"]},
}

chain := [{"roles": ["cfo"], "sla_seconds": 10}, {"roles": ["ceo", "board"], "sla_seconds": 20}]

both := {"cfo": 1, "finance-controller": 1}

test_escalation_roles_by_level if {
	lib.escalation_roles(chain, 0) == set()
	lib.escalation_roles(chain, 1) == {"cfo"}
	lib.escalation_roles(chain, 2) == {"cfo", "ceo", "board"}
	lib.escalation_roles(chain, 9) == {"cfo", "ceo", "board"}
	lib.escalation_roles([], 1) == set()
}

test_roles_allowed_at_level if {
	lib.roles_allowed_at({"finance-controller": 1}, chain, 0) == {"finance-controller"}
	lib.roles_allowed_at({"finance-controller": 1}, chain, 1) == {"finance-controller", "cfo"}
	lib.roles_allowed_at(both, chain, 2) == {"finance-controller", "cfo", "ceo", "board"}
	lib.roles_allowed_at({}, chain, 2) == set()
}

test_can_fill_own_role_or_any_slot_with_an_escalation_role if {
	lib.can_fill("ann", "finance-controller", set()) with data.baton.directory.people as staff
	not lib.can_fill("ann", "cfo", set()) with data.baton.directory.people as staff
	not lib.can_fill("dan", "cfo", set()) with data.baton.directory.people as staff
	lib.can_fill("dan", "cfo", {"ceo"}) with data.baton.directory.people as staff
	lib.can_fill("dan", "finance-controller", {"ceo"}) with data.baton.directory.people as staff
	not lib.can_fill("nobody", "cfo", {"ceo"}) with data.baton.directory.people as staff
}

test_role_subsets_are_every_non_empty_subset if {
	lib.role_subsets({}) == set()
	lib.role_subsets({"a": 1}) == {{"a"}}
	lib.role_subsets({"a": 1, "b": 2}) == {{"a"}, {"b"}, {"a", "b"}}
	count(lib.role_subsets({"a": 1, "b": 1, "c": 1, "d": 1})) == 15
}

test_slots_need_distinct_people if {
	# bob holds both roles but fills one slot only.
	lib.slot_shortfalls(both, {"bob"}, set()) == {{"roles": ["cfo", "finance-controller"], "missing": 1}} with data.baton.directory.people as staff
	not lib.slots_filled(both, {"bob"}, set()) with data.baton.directory.people as staff
	lib.slots_filled(both, {"bob", "ann"}, set()) with data.baton.directory.people as staff
	lib.slots_filled(both, {"cat", "ann"}, set()) with data.baton.directory.people as staff
	lib.slots_filled(both, {"cat", "bob"}, set()) with data.baton.directory.people as staff
}

test_slots_by_role if {
	lib.slot_shortfalls(both, {"ann", "eve"}, set()) == {{"roles": ["cfo"], "missing": 1}} with data.baton.directory.people as staff
	lib.slot_shortfalls(both, {"cat"}, set()) == {
		{"roles": ["finance-controller"], "missing": 1},
		{"roles": ["cfo", "finance-controller"], "missing": 1},
	} with data.baton.directory.people as staff
	lib.slot_shortfalls(both, set(), set()) == {
		{"roles": ["cfo"], "missing": 1},
		{"roles": ["finance-controller"], "missing": 1},
		{"roles": ["cfo", "finance-controller"], "missing": 2},
	} with data.baton.directory.people as staff
}

test_slots_with_counts if {
	two := {"finance-controller": 2}
	lib.slot_shortfalls(two, {"ann"}, set()) == {{"roles": ["finance-controller"], "missing": 1}} with data.baton.directory.people as staff
	lib.slots_filled(two, {"ann", "eve"}, set()) with data.baton.directory.people as staff
	lib.slots_filled(two, {"ann", "bob"}, set()) with data.baton.directory.people as staff
	lib.slot_shortfalls(two, set(), set()) == {{"roles": ["finance-controller"], "missing": 2}} with data.baton.directory.people as staff
}

test_escalation_roles_fill_any_open_slot if {
	not lib.slots_filled(both, {"ann", "dan"}, set()) with data.baton.directory.people as staff
	lib.slots_filled(both, {"ann", "dan"}, {"ceo"}) with data.baton.directory.people as staff
	lib.slots_filled(both, {"cat", "dan"}, {"ceo"}) with data.baton.directory.people as staff

	# Still one person per slot: one ceo cannot fill two.
	not lib.slots_filled(both, {"dan"}, {"ceo"}) with data.baton.directory.people as staff

	# At level 1 a cfo may fill the controller slot.
	lib.slots_filled({"finance-controller": 1}, {"cat"}, {"cfo"}) with data.baton.directory.people as staff
}

test_nothing_required_is_always_filled if {
	lib.slots_filled({}, set(), set())
	lib.slots_filled({}, {"anyone"}, set())
}

test_missing_approvals_keep_the_smallest_gaps if {
	lib.missing_approvals(both, {"ann"}, set()) == {{"roles": ["cfo"], "missing": 1}} with data.baton.directory.people as staff
	lib.missing_approvals(both, {"bob"}, set()) == {{"roles": ["cfo", "finance-controller"], "missing": 1}} with data.baton.directory.people as staff
	lib.missing_approvals(both, set(), set()) == {
		{"roles": ["cfo"], "missing": 1},
		{"roles": ["finance-controller"], "missing": 1},
	} with data.baton.directory.people as staff
	lib.missing_approvals(both, {"ann", "bob"}, set()) == set() with data.baton.directory.people as staff
}

test_missing_text if {
	lib.missing_text({"roles": ["cfo"], "missing": 1}, set()) == "a cfo must also approve"
	lib.missing_text({"roles": ["cfo"], "missing": 1}, {"cfo"}) == "a cfo must also approve"
	lib.missing_text({"roles": ["cfo"], "missing": 1}, {"cfo", "ceo"}) == "one more approver holding ceo or cfo must also approve"
	lib.missing_text({"roles": ["cfo", "finance-controller"], "missing": 1}, set()) == "one more approver holding cfo or finance-controller must also approve"
	lib.missing_text({"roles": ["finance-controller"], "missing": 2}, set()) == "2 more approvers holding finance-controller must also approve"
}

test_whole_number if {
	lib.whole_number(0)
	lib.whole_number(2)
	lib.whole_number(2.0)
	not lib.whole_number(-1)
	not lib.whole_number(1.5)
	not lib.whole_number("1")
	not lib.whole_number(null)
	not lib.whole_number(true)
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
