# Unit tests for baton.supervisor.actions. Run by `baton policy test` and pytest (both engines).
package baton.supervisor.actions_test

import data.baton.supervisor.actions
import rego.v1

base := {
	"action": "kill_switch.engage",
	"scope": "process:finance_close",
	"anomaly": {"kind": "error_rate", "process": "finance_close", "value": 0.6, "threshold": 0.2, "runs": 5},
}

with_anomaly(fields) := object.union(base, {"anomaly": object.union(base.anomaly, fields)})

decide(request) := d if {
	d := actions.decision with input as request
}

test_error_rate_anomaly_may_stop_its_process if {
	decide(base) == {"allow": true, "deny": []}
}

test_allow_is_a_strict_boolean if {
	decide({}).allow == false
}

test_cost_spike_is_for_people if {
	d := decide(with_anomaly({"kind": "cost_spike"}))
	d.deny == ["kill_switch.engage is not an answer to a cost_spike anomaly"]
}

test_never_global if {
	d := decide(object.union(base, {"scope": "global"}))
	d.allow == false
}

test_too_few_runs if {
	d := decide(with_anomaly({"runs": 2}))
	d.deny == ["2 runs are too few to act on (need 3)"]
}

test_unknown_action if {
	d := decide(object.union(base, {"action": "delete_ledger"}))
	d.allow == false
}

test_not_over_threshold if {
	decide(with_anomaly({"value": 0.1})).allow == false
}
