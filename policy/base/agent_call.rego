# The base policy every Baton process inherits: may this agent role perform this action for this
# tenant, now, on this model endpoint, and what must happen to the data first? Queried before
# every model call (activities/agents.py) as data.baton.base.agent_call.decision.
#
# Input:
#   {"action": "llm_call", "role": "reconciler", "tenant": "acme",
#    "model": {"endpoint": "http://127.0.0.1:8765/v1", "name": "baton-rules-not-an-llm",
#              "region": "eu"},
#    "spent_today_usd": 1.25, "estimated_cost_usd": 0.4,
#    "now": "2026-10-30T09:15:00Z"}
#
# Rules (data documents in policy/data/):
#   * roles: data.baton.agents.roles maps each agent role to the actions it may perform; an
#     unknown role, an unknown action or an action the role may not perform is a deny.
#   * residency: for the actions that send data to a model (data.baton.agents.model_actions) the
#     model endpoint's region must be one of the tenant's allowed_model_regions; otherwise deny,
#     and `reroute_regions` lists the allowed regions so the caller can pick another endpoint.
#   * PII: a tenant whose `pii` is "redact" (or unset: the safe default) gets the obligation
#     `redact` (data.baton.pii.kinds) on every model action; "none" means no redaction.
#   * spend: spent_today_usd + estimated_cost_usd above the tenant's daily_spend_cap_usd is a
#     deny (model actions only; compared in micro-dollars so both engines agree to the digit).
#   * windows: an action listed in data.baton.windows is allowed only on the listed days between
#     start_hour and end_hour, local time at utc_offset_minutes (a fixed offset: no DST, so a
#     decision never depends on a time-zone database). The time is input.now, never the
#     engine's clock.
#
# Fail closed: every check is "deny unless a positive fact holds", and facts are zero-argument
# rules (see policy/lib/lib.rego), so missing or mistyped input and broken data deny.
package baton.base.agent_call

import data.baton.lib
import rego.v1

# The one document callers read. `allow` is a strict boolean over `deny`; `redact` (sorted
# kinds) and `reroute_regions` (sorted; non-empty only when residency denied the call) are the
# obligations activities/policy.py parses into Obligations.
decision := {"allow": true, "deny": [], "redact": redact, "reroute_regions": []} if {
	clean # a clean call was not refused for residency, so there is nowhere to reroute it
} else := {
	"allow": count(deny) == 0,
	"deny": sort(deny),
	"redact": redact,
	"reroute_regions": reroute_regions,
}

# ---------------------------------------------------------------------------------------------
# The fast path. A well-formed call by a role allowed to make it, for a known tenant, outside any
# time window, within the residency and spend rules, is decided by `clean` in one pass; only a
# call with something wrong evaluates the detailed rules below, which say what. `clean` holds
# exactly when `problems` is empty (the policy tests check this for every case). Look-ups are
# keyed (the role, the tenant, the action's window); no rule scans data on this path except the
# checks that the data itself is well-formed.
# ---------------------------------------------------------------------------------------------

deny := set() if clean else := problems

clean if {
	roles_configured
	role_allowed # implies role_known and action_known
	tenant_known
	model_actions_configured
	pii_setting_valid
	not windowed
	model_call_clean
}

model_call_clean if not sends_to_model

model_call_clean if {
	sends_to_model
	model_endpoint_named
	model_region_named
	allowed_regions_configured
	input.model.region in tenant.allowed_model_regions # region_allowed, without sorting
	redaction_possible
	cap_configured
	spent_valid
	estimate_valid
	within_cap
}

# not over_cap for valid numbers (inlined: three function calls cost more than the sums). The
# guards are repeated because regorus evaluates a rule it meets even after its caller failed.
within_cap if {
	cap_configured
	spent_valid
	estimate_valid
	round(input.spent_today_usd * 1000000) + round(input.estimated_cost_usd * 1000000) <= round(cap * 1000000)
}

redaction_possible if not redaction_required

redaction_possible if pii_kinds_configured

roles := data.baton.agents.roles

model_actions := data.baton.agents.model_actions

tenant_name := lib.input_string(["tenant"])

# Keyed by the input directly (a non-string tenant finds nothing, as "" would): tenant_name,
# a function call, is only needed for messages.
tenant := data.baton.tenants[input.tenant]

# ---------------------------------------------------------------------------------------------
# Roles and actions
# ---------------------------------------------------------------------------------------------

# The roles map is an object, and the entry of the role asking is a list of action names. Only
# that entry is checked (a keyed look-up, not a scan over every role on every decision); a
# malformed entry of another role denies that role's calls, not everyone's.
roles_configured if {
	is_object(roles)
	role_entry_valid
}


role_listed if {
	_ := roles[input.role]
}

role_entry_valid if not role_listed

role_entry_valid if {
	is_array(roles[input.role])
	every action in roles[input.role] {
		is_string(action)
		action != ""
	}
}

role_known if is_array(roles[input.role])

action_known if {
	some _, actions in roles
	input.action in actions
}

role_allowed if input.action in roles[input.role]

problems contains msg if {
	not roles_configured
	msg := "policy data is incomplete: data.baton.agents.roles must map each agent role to a list of action names"
}

problems contains msg if {
	not role_known
	msg := sprintf("unknown agent role '%s': it is not listed in data.baton.agents.roles", [
		lib.input_text(["role"]),
	])
}

problems contains msg if {
	not action_known
	msg := sprintf("unknown action '%s': no agent role may perform it", [lib.input_text(["action"])])
}

problems contains msg if {
	roles_configured
	role_known
	action_known
	not role_allowed
	msg := sprintf("agent role '%s' may not perform '%s' (it may perform: %s)", [
		input.role,
		input.action,
		concat(", ", sort(roles[input.role])),
	])
}

# ---------------------------------------------------------------------------------------------
# Tenant
# ---------------------------------------------------------------------------------------------

tenant_known if is_object(tenant)

problems contains msg if {
	not tenant_known
	msg := sprintf("unknown tenant '%s': it is not listed in data.baton.tenants", [
		lib.input_text(["tenant"]),
	])
}

# ---------------------------------------------------------------------------------------------
# Actions that send the tenant's data to a model
# ---------------------------------------------------------------------------------------------

model_actions_configured if model_actions == data.baton_verified.agent_model_actions

model_actions_configured if model_actions_shape_valid

data_checks["agent_model_actions"] := model_actions if model_actions_shape_valid

model_actions_shape_valid if {
	is_array(model_actions)
	every action in model_actions {
		is_string(action)
		action != ""
	}
}

sends_to_model if input.action in model_actions

problems contains msg if {
	not model_actions_configured
	msg := "policy data is incomplete: data.baton.agents.model_actions must be a list of action names"
}

# ---------------------------------------------------------------------------------------------
# Data residency
# ---------------------------------------------------------------------------------------------

model_endpoint_named if lib.named(input.model.endpoint)

model_region_named if lib.named(input.model.region)

allowed_regions_configured if {
	is_array(tenant.allowed_model_regions)
	count(tenant.allowed_model_regions) > 0
	every region in tenant.allowed_model_regions {
		is_string(region)
		region != ""
	}
}

default allowed_regions := []

allowed_regions := sort({region | some region in tenant.allowed_model_regions}) if allowed_regions_configured

region_allowed if input.model.region in allowed_regions

residency_denied if {
	sends_to_model
	model_region_named
	allowed_regions_configured
	not region_allowed
}

default reroute_regions := []

reroute_regions := allowed_regions if residency_denied

problems contains "the request does not name the model endpoint (model.endpoint)" if {
	sends_to_model
	not model_endpoint_named
}

problems contains "the request does not name the model endpoint's region (model.region)" if {
	sends_to_model
	not model_region_named
}

problems contains msg if {
	sends_to_model
	tenant_known
	not allowed_regions_configured
	msg := sprintf("policy data is incomplete: tenant '%s' needs allowed_model_regions, a non-empty list of region names", [tenant_name])
}

problems contains msg if {
	residency_denied
	msg := sprintf("data residency: tenant '%s' allows model endpoints in [%s] only, and %s is in region '%s': reroute to an endpoint in an allowed region", [
		tenant_name,
		concat(", ", allowed_regions),
		lib.input_text(["model", "endpoint"]),
		input.model.region,
	])
}

# ---------------------------------------------------------------------------------------------
# Personal data: redact before the data leaves
# ---------------------------------------------------------------------------------------------

# "redact" when the tenant does not say: the safe default.
pii_setting := object.get(tenant, "pii", "redact") if tenant_known

pii_setting_valid if pii_setting == "redact"

pii_setting_valid if pii_setting == "none"

pii_kinds_configured if data.baton.pii.kinds == data.baton_verified.pii_kinds

pii_kinds_configured if pii_kinds_shape_valid

data_checks["pii_kinds"] := data.baton.pii.kinds if pii_kinds_shape_valid

pii_kinds_shape_valid if {
	is_array(data.baton.pii.kinds)
	count(data.baton.pii.kinds) > 0
	every kind in data.baton.pii.kinds {
		is_string(kind)
		kind != ""
	}
}

redaction_required if {
	sends_to_model
	pii_setting == "redact"
}

default redact := []

# The sorted kinds are computed once per bundle revision (verified data, see posting.rego) and
# only for other kinds (a test's `with`, an engine without the copy) on the decision.
redact := data.baton_verified.pii_redact if {
	redaction_required
	data.baton.pii.kinds == data.baton_verified.pii_kinds
} else := sort({kind | some kind in data.baton.pii.kinds}) if {
	redaction_required
	pii_kinds_configured
}

data_checks["pii_redact"] := sort({kind | some kind in data.baton.pii.kinds}) if pii_kinds_shape_valid

problems contains msg if {
	tenant_known
	not pii_setting_valid
	msg := sprintf("tenant '%s' has an unknown pii setting: use \"redact\" or \"none\"", [tenant_name])
}

problems contains msg if {
	redaction_required
	not pii_kinds_configured
	msg := "policy data is incomplete: data.baton.pii.kinds must be a non-empty list of the kinds of personal data to redact"
}

# ---------------------------------------------------------------------------------------------
# Spend caps (per tenant and UTC day)
# ---------------------------------------------------------------------------------------------

cap := tenant.daily_spend_cap_usd

cap_configured if {
	is_number(cap)
	cap >= 0
}

spent_valid if {
	is_number(input.spent_today_usd)
	input.spent_today_usd >= 0
}

estimate_valid if {
	is_number(input.estimated_cost_usd)
	input.estimated_cost_usd >= 0
}

# Whole micro-dollars: exact on both engines, whatever the floats.
micros(usd) := round(usd * 1000000)

over_cap if {
	cap_configured
	spent_valid
	estimate_valid
	micros(input.spent_today_usd) + micros(input.estimated_cost_usd) > micros(cap)
}

problems contains msg if {
	sends_to_model
	tenant_known
	not cap_configured
	msg := sprintf("policy data is incomplete: tenant '%s' needs daily_spend_cap_usd, a number >= 0", [tenant_name])
}

problems contains "spent_today_usd must be a number >= 0 (what the tenant's model calls cost today)" if {
	sends_to_model
	not spent_valid
}

problems contains "estimated_cost_usd must be a number >= 0 (what this call is expected to cost)" if {
	sends_to_model
	not estimate_valid
}

problems contains msg if {
	sends_to_model
	over_cap
	msg := sprintf("spend cap: tenant '%s' may spend %s USD a day on models; %s spent today + %s estimated for this call would exceed it", [
		tenant_name,
		lib.money(cap),
		lib.money(input.spent_today_usd),
		lib.money(input.estimated_cost_usd),
	])
}

# ---------------------------------------------------------------------------------------------
# Time windows (business hours) for some actions
# ---------------------------------------------------------------------------------------------

weekdays := ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

# A keyed look-up: defined whenever the action has an entry, whatever its value (a malformed
# entry is then a deny below).
windowed if {
	_ := data.baton.windows[input.action]
}

window := data.baton.windows[input.action]

# The window's numbers as integers (floor: a JSON 60.0 prints and divides like 60 on both engines).
# Defined only for a well-formed window: regorus evaluates a rule it meets even when the rule
# that uses it has already failed, and floor("60") is an error there (undefined on OPA).
window_offset := floor(window.utc_offset_minutes) if window_configured

window_start := floor(window.start_hour) if window_configured

window_end := floor(window.end_hour) if window_configured

window_configured if {
	is_array(window.days)
	count(window.days) > 0
	every day in window.days {
		day in weekdays
	}
	lib.whole_number(window.start_hour)
	lib.whole_number(window.end_hour)
	window.start_hour < window.end_hour
	window.end_hour <= 24
	is_number(window.utc_offset_minutes)
	window.utc_offset_minutes == floor(window.utc_offset_minutes)
	abs(window.utc_offset_minutes) <= 840
}

problems contains msg if {
	windowed
	not window_configured
	msg := sprintf("policy data is incomplete: data.baton.windows.%s needs days (a non-empty list of mon..sun), whole start_hour < end_hour within 0..24 and a whole utc_offset_minutes within -840..840", [
		input.action,
	])
}

problems contains msg if {
	windowed
	window_configured
	not now_valid
	msg := sprintf("the request has no valid time: now must be an RFC 3339 time such as 2026-10-30T09:15:00Z ('%s' may only run at certain hours)", [
		input.action,
	])
}

problems contains msg if {
	windowed
	window_configured
	now_valid
	not in_window
	local := local_minute(window_offset)
	msg := sprintf("'%s' is only allowed %s %02d:00-%02d:00 (UTC%s); now is %s %02d:%02d there", [
		input.action,
		concat(",", window.days),
		window_start,
		window_end,
		offset_text(window_offset),
		weekday_name(local),
		floor(minute_of_day(local) / 60),
		minute_of_day(local) % 60,
	])
}

in_window if {
	local := local_minute(window_offset)
	weekday_name(local) in window.days
	minute_of_day(local) >= window_start * 60
	minute_of_day(local) < window_end * 60
}

# ---- input.now, parsed by hand: both engines agree on integers, not on time.* builtins' errors

rfc3339 := `^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$`

now_wellformed if {
	is_string(input.now)
	regex.match(rfc3339, input.now)
}

# A field of 2 or 4 digits as a number ("08" -> 8; OPA's to_number refuses a leading zero).
digits2(text) := to_number(concat("", ["1", text])) - 100

digits4(text) := to_number(concat("", ["1", text])) - 10000

now_fields := {
	"year": digits4(substring(input.now, 0, 4)),
	"month": digits2(substring(input.now, 5, 2)),
	"day": digits2(substring(input.now, 8, 2)),
	"hour": digits2(substring(input.now, 11, 2)),
	"minute": digits2(substring(input.now, 14, 2)),
	"second": digits2(substring(input.now, 17, 2)),
	"offset": now_offset,
	"offset_hours": now_offset_hours,
} if now_wellformed

now_zone := substring(input.now, count(input.now) - 6, 6) if {
	now_wellformed
	not endswith(upper(input.now), "Z")
}

# Minutes east of UTC of input.now.
now_offset := 0 if {
	now_wellformed
	endswith(upper(input.now), "Z")
}

now_offset := sign * (digits2(substring(now_zone, 1, 2)) * 60 + digits2(substring(now_zone, 4, 2))) if {
	sign := {"+": 1, "-": -1}[substring(now_zone, 0, 1)]
	digits2(substring(now_zone, 4, 2)) < 60
}

now_offset_hours := 0 if {
	now_wellformed
	endswith(upper(input.now), "Z")
}

now_offset_hours := digits2(substring(now_zone, 1, 2))

leap_year(year) if {
	year % 4 == 0
	year % 100 != 0
}

leap_year(year) if year % 400 == 0

days_in_month(year, month) := 29 if {
	month == 2
	leap_year(year)
} else := [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]

now_valid if {
	f := now_fields
	f.year >= 1 # civil_days divides the year: keep it positive (see local_day)
	f.month >= 1
	f.month <= 12
	f.day >= 1
	f.day <= days_in_month(f.year, f.month)
	f.hour <= 23
	f.minute <= 59
	f.second <= 60
	f.offset_hours <= 23
}

# Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
civil_days(year, month, day) := days if {
	shifted := year - march_shift(month)
	era := floor(shifted / 400)
	year_of_era := shifted - era * 400
	day_of_year := floor((153 * ((month + 9) % 12) + 2) / 5) + day - 1
	day_of_era := (year_of_era * 365 + floor(year_of_era / 4)) - floor(year_of_era / 100) + day_of_year
	days := (era * 146097 + day_of_era) - 719468
}

march_shift(month) := 1 if month <= 2
else := 0

# Minutes since 1970-01-01 00:00 local time at `offset` minutes east of UTC.
local_minute(offset) := minute if {
	f := now_fields
	utc := ((civil_days(f.year, f.month, f.day) * 1440 + f.hour * 60) + f.minute) - f.offset
	minute := utc + offset
}

# Days since 1970-01-01 of a minute. OPA's floor() of a number between -1 and 0 is 0
# (floor(-1 / 1440) is 0 there, -1 on regorus), so the division runs on a count shifted by a
# whole number of weeks that keeps it positive for every year from 0001.
week_shift := 7 * 110000

local_day(minute) := floor((minute + week_shift * 1440) / 1440) - week_shift

minute_of_day(minute) := minute - local_day(minute) * 1440

# 1970-01-01 was a Thursday (index 3 with Monday = 0).
weekday_name(minute) := weekdays[(local_day(minute) + week_shift + 3) % 7]

# "+01:00", "-05:30" for an offset in whole minutes.
offset_text(offset) := sprintf("%s%02d:%02d", [offset_sign(offset), floor(abs(offset) / 60), abs(offset) % 60])

offset_sign(offset) := "-" if offset < 0
else := "+"
