# Unit tests for baton.finance.close_exceptions: below the threshold the period closes, up to the
# maximum a finance-controller signs off, above it (or on bad input) the close fails safe.
package baton.finance.close_exceptions_test

import data.baton.finance.close_exceptions
import rego.v1

held(amount) := {"entry_id": "ADJ-X1", "account": "9999-crypto-wallet", "amount": amount, "reasons": ["not an allowed account"]}

base := {
	"action": "close_with_exceptions",
	"tenant": "acme",
	"period": "2026-10",
	"requested_by": "alice",
	"preparer": "agent:reconciler",
	"exceptions": [held(-250)],
}

decide(fields) := d if {
	d := close_exceptions.decision with input as object.union(base, fields)
}

test_small_exceptions_allow_the_close if {
	d := decide({})
	d.allow == true
	d.require_approval == []
	d.approver_roles == []
}

test_the_total_counts_sizes_whatever_the_sign if {
	d := decide({"exceptions": [held(-600), object.union(held(600), {"entry_id": "ADJ-X2"})]})
	d.allow == true
	d.require_approval == ["open exceptions total 1200.00, at or above the sign-off threshold 1000.00: a finance-controller must sign off closing with them"]
	d.required_approvals == [{"role": "finance-controller", "count": 1}]
	d.candidates["finance-controller"] == ["carol", "dave", "frank"]
}

test_the_requester_does_not_sign_off if {
	d := decide({"requested_by": "carol", "exceptions": [held(-5000)]})
	not "carol" in d.eligible_approvers
}

test_above_the_maximum_the_close_fails_safe if {
	d := decide({"exceptions": [held(-5000000)]})
	d.allow == false
	d.deny == ["open exceptions total 5000000.00, above the most a period may close with (1000000.00): the close fails safe"]
	d.require_approval == []
}

test_bad_input_fails_closed if {
	decide({"exceptions": []}).allow == false
	decide({"exceptions": [held("250")]}).allow == false
	decide({"action": "post_journal_entry"}).allow == false
	decide({"tenant": "nobody"}).allow == false
	d := close_exceptions.decision with input as base with data.baton.finance.limits.close_exceptions as {}
	d.allow == false
}
