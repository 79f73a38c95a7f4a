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

# People holding any of the wanted roles, minus the excluded ones (requester, preparer, amender),
# sorted.
eligible_approvers(wanted, excluded) := sort({person |
	some person, entry in data.baton.directory.people
	some role in entry.roles
	role in wanted
	not person in excluded
})

# ---------------------------------------------------------------------------------------------
# Who may approve
# ---------------------------------------------------------------------------------------------

# Every reason why `approver` may not approve work that `requested_by` asked for, `preparer` made
# and `amended_by` changed ("" when nobody did), given the roles that may approve it (any one
# suffices). Empty set = authorised. With no roles required only segregation of duties is checked.
approver_problems(approver, requested_by, preparer, amended_by, roles) := (segregation_of_duties(
	approver,
	requested_by,
	preparer,
	amended_by,
) | role_problems(approver, roles))

segregation_of_duties(approver, requested_by, preparer, amended_by) := {reason |
	some did, person in {"requested": requested_by, "prepared": preparer, "amended": amended_by}
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
# N-of-M approvals and escalation
#
# `requirements` is an object role -> count: the approval needs `count` distinct people holding
# `role`, for every role (its "slots"); one person fills at most one slot. `chain` is the
# escalation chain, a list of tiers {"roles": [...], "sla_seconds": n}. At escalation level k
# (k tiers entered, 0 = none) the roles of tiers 1..k may fill ANY open slot.
# ---------------------------------------------------------------------------------------------

# The roles of the first `level` tiers of an escalation chain.
escalation_roles(chain, level) := {role |
	some i, tier in chain
	i < level
	some role in tier.roles
}

# The roles whose holders may approve at `level`: the required roles plus the roles of the tiers
# entered so far. Empty when nothing is required (then only segregation of duties is checked).
roles_allowed_at(requirements, chain, level) := set() if {
	count(requirements) == 0
} else := {role | some role, _ in requirements} | escalation_roles(chain, level)

# True when `person` can fill a slot of `role`: they hold it, or hold one of the `any_slot` roles
# (the escalation roles entered so far).
can_fill(person, role, any_slot) if role in roles_of(person)

can_fill(person, role, any_slot) if has_any_role(person, any_slot)

# Every non-empty set of the required roles (enumerated by bit mask; there are only a few).
role_subsets(requirements) := {subset |
	roles := sort({role | some role, _ in requirements})
	count(roles) > 0
	some mask in numbers.range(1, bits.lsh(1, count(roles)) - 1)
	subset := {role | some i, role in roles; bits.and(mask, bits.lsh(1, i)) != 0}
}

# Hall's condition for the slots: the `approvers` can fill every slot, each person at most one,
# iff for every non-empty set S of required roles the approvers able to fill some slot in S are
# at least as many as the slots in S. One {"roles": S (sorted), "missing": n} per S that falls
# n people short; empty = every slot can be filled.
slot_shortfalls(requirements, approvers, any_slot) := {gap |
	some subset in role_subsets(requirements)
	slots := sum([n | some role in subset; n := requirements[role]])
	able := {person | some person in approvers; some role in subset; can_fill(person, role, any_slot)}
	slots > count(able)
	gap := {"roles": sort(subset), "missing": slots - count(able)}
}

slots_filled(requirements, approvers, any_slot) if count(slot_shortfalls(requirements, approvers, any_slot)) == 0

# The shortfalls worth telling a person: those with no smaller shortfall inside them ("a cfo
# must also approve" rather than also "one more cfo or finance-controller").
missing_approvals(requirements, approvers, any_slot) := {gap |
	gaps := slot_shortfalls(requirements, approvers, any_slot)
	some gap in gaps
	inside := {other |
		some other in gaps
		other != gap
		count({role | some role in other.roles} - {role | some role in gap.roles}) == 0
	}
	count(inside) == 0
}

# One shortfall as text; the escalation roles entered so far may fill it too.
missing_text(gap, any_slot) := sprintf("a %s must also approve", [concat("", roles)]) if {
	roles := sort({role | some role in gap.roles} | {role | some role in any_slot})
	gap.missing == 1
	count(roles) == 1
} else := sprintf("one more approver holding %s must also approve", [concat(" or ", roles)]) if {
	roles := sort({role | some role in gap.roles} | {role | some role in any_slot})
	gap.missing == 1
} else := sprintf("%d more approvers holding %s must also approve", [
	gap.missing,
	concat(" or ", sort({role | some role in gap.roles} | {role | some role in any_slot})),
])

# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

# A non-empty string.
named(value) if {
	is_string(value)
	value != ""
}

# A whole number >= 0 (an integer-valued JSON number).
whole_number(value) if {
	is_number(value)
	value == floor(value)
	value >= 0
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
