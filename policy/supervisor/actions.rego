# May the supervisor agent act on an anomaly it found? Asked by activities/supervisor.py before
# it engages the kill switch, as data.baton.supervisor.actions.decision.
#
# Input:
#   {"action": "kill_switch.engage", "scope": "process:finance_close",
#    "anomaly": {"kind": "error_rate", "process": "finance_close", "value": 0.6,
#                "threshold": 0.2, "runs": 5}}
#
# Rules (data.baton.supervision in policy/data/supervisor.json):
#   * only the actions listed in `actions` (today: kill_switch.engage);
#   * only for the anomaly kinds that action lists in `on` (a cost spike or an approval backlog
#     is for people to judge; an error-rate spike stops the process);
#   * only for the process that misbehaves (scope process:<anomaly.process>): never global,
#     never a tenant or an agent the anomaly is not about;
#   * only on evidence: at least `min_runs` closed runs behind the rate, and a value above its
#     threshold.
#
# Fail closed: every check is "deny unless a positive fact holds".
package baton.supervisor.actions

import rego.v1

decision := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
}

config := data.baton.supervision

action_known if config.actions[input.action]

kind_allowed if input.anomaly.kind in config.actions[input.action].on

scope_matches if input.scope == concat(":", ["process", input.anomaly.process])

enough_runs if input.anomaly.runs >= config.min_runs

over_threshold if input.anomaly.value > input.anomaly.threshold

deny contains msg if {
	not action_known
	msg := sprintf("the supervisor may not %v: not in data.baton.supervision.actions", [input.action])
}

deny contains msg if {
	action_known
	not kind_allowed
	msg := sprintf("%v is not an answer to a %v anomaly", [input.action, input.anomaly.kind])
}

deny contains msg if {
	not scope_matches
	msg := sprintf("scope %v is not the misbehaving process (process:%v)", [input.scope, input.anomaly.process])
}

deny contains msg if {
	not enough_runs
	msg := sprintf("%v runs are too few to act on (need %v)", [input.anomaly.runs, config.min_runs])
}

deny contains "the anomaly's value is not above its threshold" if not over_threshold
