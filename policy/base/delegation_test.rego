package baton.base.delegation_test

import data.baton.base.delegation
import rego.v1

base := {
	"action": "delegate_approval",
	"process": "finance_close",
	"tenant": "acme",
	"request_id": "apr-1",
	"delegator": "carol",
	"delegate": "frank",
	"roles": ["finance-controller"],
	"requested_by": "alice",
	"excluded": ["baton:reconciler"],
	"approved_by": [],
}

test_a_colleague_holding_the_role_may_receive_it if {
	d := delegation.decision with input as base
	d.allow == true
	d.delegate_roles == ["finance-controller"]
}

test_someone_without_the_role_may_not if {
	d := delegation.decision with input as object.union(base, {"delegate": "erin"})
	d.allow == false
	"erin holds none of the roles this request needs (finance-controller)" in d.deny
}

test_the_requester_may_not if {
	d := delegation.decision with input as object.union(base, {"requested_by": "frank"})
	d.allow == false
	"segregation of duties: frank requested this action and cannot decide on it" in d.deny
}

test_nobody_unknown_or_self_or_already_approved if {
	unknown := delegation.decision with input as object.union(base, {"delegate": "mallory"})
	"mallory is not in the directory" in unknown.deny
	self := delegation.decision with input as object.union(base, {"delegate": "carol"})
	"carol cannot delegate a request to themself" in self.deny
	done := delegation.decision with input as object.union(base, {"approved_by": ["frank"]})
	"frank has already approved this request" in done.deny
}

test_a_tenant_may_name_who_receives_delegations if {
	d := delegation.decision with input as object.union(base, {"tenant": "globex", "delegate": "carol", "delegator": "frank"})
	"tenant globex allows delegation only to dave, frank" in d.deny
	ok := delegation.decision with input as object.union(base, {"tenant": "globex"})
	ok.allow == true
}

test_unknown_action_is_denied if {
	d := delegation.decision with input as object.union(base, {"action": "hand_over"})
	d.allow == false
}
