# Helpers shared by every Baton policy: directory look-ups, who may approve what (segregation of
# duties and roles), and message formatting that reads the same on OPA and on regorus.
#
# Two rules of thumb hold for every function here, because Baton's policies must fail closed on
# both engines:
#   * Callers pass DEFINED arguments (use "" or [] for a missing value). A call with an undefined
#     argument is itself undefined, and inside `not` OPA and regorus then disagree (OPA lifts the
#     argument out of the negation, so `not f(input.missing)` is undefined there but true on
#     regorus). Policies negate zero-argument rules only.
#   * Nothing returns a number formatted with sprintf("%v"): OPA prints 1234567.5 as
#     "1.2345675e+06", regorus as "1234567.5". Use money() for amounts.
package baton.lib

import rego.v1

# ---------------------------------------------------------------------------------------------
# Directory (data.baton.directory.people: {"<person>": {"roles": [...], "name": ...}})
# ---------------------------------------------------------------------------------------------

# The roles a person holds; empty when the person is not in the directory.
roles_of(person) := {role | some role in data.baton.directory.people[person].roles}

in_directory(person) if is_object(data.baton.directory.people[person])

# True when the person holds at least one of the wanted roles.
has_any_role(person, wanted) if {
	some role in wanted
	role in roles_of(person)
}

# People holding any of the wanted roles, minus the excluded ones (requester, preparer), sorted.
eligible_approvers(wanted, excluded) := sort({person |
	some person, entry in data.baton.directory.people
	some role in entry.roles
	role in wanted
	not person in excluded
})

# ---------------------------------------------------------------------------------------------
# Who may approve
# ---------------------------------------------------------------------------------------------

# Every reason why `approver` may not approve work that `requested_by` asked for and `preparer`
# made, given the roles that may approve it (any one suffices). Empty set = authorised. With no
# roles required only segregation of duties is checked.
approver_problems(approver, requested_by, preparer, roles) := (segregation_of_duties(
	approver,
	requested_by,
	preparer,
) | role_problems(approver, roles))

segregation_of_duties(approver, requested_by, preparer) := {reason |
	some did, person in {"requested": requested_by, "prepared": preparer}
	person == approver
	reason := sprintf("segregation of duties: %s %s this entry and cannot approve it", [approver, did])
}

role_problems(approver, roles) := {reason |
	count(roles) > 0
	not in_directory(approver)
	reason := sprintf("approver '%s' is not in the directory, so holds no approver role", [approver])
} | {reason |
	count(roles) > 0
	in_directory(approver)
	not has_any_role(approver, roles)
	reason := sprintf("%s cannot approve this: it needs one of the roles [%s] and %s holds [%s]", [
		approver,
		concat(", ", sort(roles)),
		approver,
		concat(", ", sort(roles_of(approver))),
	])
}

# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

# A non-empty string.
named(value) if {
	is_string(value)
	value != ""
}

# The string at `path` in the input, or "" when it is missing or not a string. Use it to pass a
# defined argument to the functions above.
input_string(path) := value if {
	value := object.get(input, path, null)
	is_string(value)
} else := ""

# The string at `path` in the input for a message, or "(missing)". A message must never be
# undefined: the deny rule that builds it would then silently not fire.
input_text(path) := value if {
	value := object.get(input, path, null)
	named(value)
} else := "(missing)"

# An amount as text with two decimals ("-12.50", "1000000.00"), built from integers so that
# OPA and regorus print exactly the same characters.
money(amount) := sprintf("%s%d.%02d", [minus_sign(cents), floor(units / 100), units % 100]) if {
	cents := round(amount * 100)
	units := abs(cents)
}

minus_sign(cents) := "-" if cents < 0
else := ""
