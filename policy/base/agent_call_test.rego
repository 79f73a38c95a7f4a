# Unit tests for baton.base.agent_call: roles and actions, tenants, data residency (with the
# reroute obligation), PII redaction obligations, spend caps, business-hours windows (with the
# hand-written RFC 3339 parsing) and broken data documents. Run by `baton policy test` and by
# pytest on both OPA's evaluator and regorus.
package baton.base.agent_call_test

import data.baton.base.agent_call
import rego.v1

base := {
	"action": "llm_call",
	"role": "reconciler",
	"tenant": "acme",
	"model": {"endpoint": "http://127.0.0.1:8765/v1", "name": "baton-rules-not-an-llm", "region": "eu"},
	"spent_today_usd": 1.25,
	"estimated_cost_usd": 0.4,
	"now": "2026-10-30T09:15:00Z",
}

all_kinds := ["card", "email", "iban", "national_id", "phone"]

# A customer email (windowed action, no model) at `now`: 2026-10-30 is a Friday.
email_at(now) := object.union(base, {"action": "send_customer_email", "role": "customer_notifier", "now": now})

with_fields(fields) := object.union(base, fields)

with_model(fields) := object.union(base, {"model": object.union(base.model, fields)})

decide(request) := d if {
	d := agent_call.decision with input as request
}

# ---------------------------------------------------------------------------------------------
# allow and the document's shape
# ---------------------------------------------------------------------------------------------

test_model_call_is_allowed_with_redaction_for_acme if {
	d := decide(base)
	d == {"allow": true, "deny": [], "redact": all_kinds, "reroute_regions": []}
}

test_allow_is_a_strict_boolean if {
	is_boolean(decide(base).allow)
	decide({}).allow == false
}

test_every_agent_of_the_finance_close_may_call_a_model if {
	every role in ["reconciler", "compliance_checker", "close_memo_writer", "reviser"] {
		decide(with_fields({"role": role})).allow == true
	}
}

# ---------------------------------------------------------------------------------------------
# roles and actions
# ---------------------------------------------------------------------------------------------

test_unknown_role_is_denied if {
	d := decide(with_fields({"role": "intern"}))
	d.deny == ["unknown agent role 'intern': it is not listed in data.baton.agents.roles"]
}

test_missing_or_mistyped_role_is_denied if {
	decide(json.remove(base, ["role"])).deny == ["unknown agent role '(missing)': it is not listed in data.baton.agents.roles"]
	decide(with_fields({"role": 7})).deny == ["unknown agent role '(missing)': it is not listed in data.baton.agents.roles"]
}

test_unknown_action_is_denied if {
	d := decide(with_fields({"action": "wire_money"}))
	d.deny == ["unknown action 'wire_money': no agent role may perform it"]
	d.allow == false
}

test_role_may_only_perform_its_actions if {
	d := decide(with_fields({"action": "send_customer_email"}))
	d.deny == ["agent role 'reconciler' may not perform 'send_customer_email' (it may perform: llm_call)"]
}

test_broken_roles_data_denies if {
	d := decide(base) with data.baton.agents.roles as {"reconciler": "llm_call"}
	"policy data is incomplete: data.baton.agents.roles must map each agent role to a list of action names" in d.deny
	d.allow == false
	e := decide(base) with data.baton.agents.roles as {"reconciler": ["llm_call", 3]}
	e.allow == false
}

# ---------------------------------------------------------------------------------------------
# tenants
# ---------------------------------------------------------------------------------------------

test_unknown_tenant_is_denied if {
	d := decide(with_fields({"tenant": "initech"}))
	d.deny == ["unknown tenant 'initech': it is not listed in data.baton.tenants"]
}

test_tenant_that_is_not_a_string_is_denied if {
	d := decide(with_fields({"tenant": ["acme"]}))
	"unknown tenant '(missing)': it is not listed in data.baton.tenants" in d.deny
}

test_broken_model_actions_data_denies if {
	d := decide(base) with data.baton.agents.model_actions as "llm_call"
	d.deny == ["policy data is incomplete: data.baton.agents.model_actions must be a list of action names"]
}

# ---------------------------------------------------------------------------------------------
# data residency
# ---------------------------------------------------------------------------------------------

test_endpoint_outside_the_tenants_regions_is_denied_with_reroute_regions if {
	d := decide(with_model({"region": "us"}))
	d.allow == false
	d.deny == ["data residency: tenant 'acme' allows model endpoints in [eu] only, and http://127.0.0.1:8765/v1 is in region 'us': reroute to an endpoint in an allowed region"]
	d.reroute_regions == ["eu"]
}

test_reroute_regions_are_sorted_and_only_set_on_a_residency_deny if {
	d := decide(with_model({"region": "apac"})) with data.baton.tenants.acme.allowed_model_regions as ["us", "eu"]
	d.reroute_regions == ["eu", "us"]
	decide(with_model({"region": "us"})).reroute_regions == ["eu"]
	decide(with_fields({"spent_today_usd": -1})).reroute_regions == []
	decide(base).reroute_regions == []
}

test_a_tenant_may_allow_several_regions if {
	decide(object.union(with_model({"region": "us"}), {"tenant": "globex"})).allow == true
	decide(object.union(with_model({"region": "eu"}), {"tenant": "globex"})).allow == true
}

test_model_endpoint_and_region_must_be_named if {
	decide(json.remove(base, ["model/region"])).deny == ["the request does not name the model endpoint's region (model.region)"]
	decide(with_model({"region": ""})).deny == ["the request does not name the model endpoint's region (model.region)"]
	decide(json.remove(base, ["model/endpoint"])).deny == ["the request does not name the model endpoint (model.endpoint)"]
	count(decide(json.remove(base, ["model"])).deny) == 2
	count(decide(with_fields({"model": "eu"})).deny) == 2
	decide(json.remove(base, ["model/region"])).reroute_regions == []
}

test_tenant_without_allowed_regions_is_denied if {
	d := decide(base) with data.baton.tenants.acme as {"region": "eu", "pii": "redact", "daily_spend_cap_usd": 10}
	d.deny == ["policy data is incomplete: tenant 'acme' needs allowed_model_regions, a non-empty list of region names"]
	e := decide(base) with data.baton.tenants.acme.allowed_model_regions as []
	e.allow == false
	f := decide(base) with data.baton.tenants.acme.allowed_model_regions as ["eu", 4]
	f.allow == false
	f.reroute_regions == []
}

test_actions_without_a_model_need_no_model_region if {
	d := decide(json.remove(email_at("2026-10-30T09:15:00Z"), ["model"]))
	d.allow == true
}

# ---------------------------------------------------------------------------------------------
# personal data
# ---------------------------------------------------------------------------------------------

test_redaction_follows_the_tenant_setting if {
	decide(base).redact == all_kinds
	decide(with_fields({"tenant": "globex"})).redact == []
}

test_tenant_without_a_pii_setting_is_redacted if {
	d := decide(base) with data.baton.tenants.acme as {"allowed_model_regions": ["eu"], "daily_spend_cap_usd": 10}
	d.allow == true
	d.redact == all_kinds
}

test_unknown_pii_setting_is_denied if {
	d := decide(base) with data.baton.tenants.acme.pii as "mask-some"
	d.deny == ["tenant 'acme' has an unknown pii setting: use \"redact\" or \"none\""]
	e := decide(base) with data.baton.tenants.acme.pii as false
	e.allow == false
}

test_redaction_kinds_come_from_data if {
	decide(base).redact == ["email"] with data.baton.pii.kinds as ["email", "email"]
	d := decide(base) with data.baton.pii.kinds as []
	d.deny == ["policy data is incomplete: data.baton.pii.kinds must be a non-empty list of the kinds of personal data to redact"]
	d.redact == []
}

test_no_redaction_for_actions_that_send_nothing_to_a_model if {
	decide(email_at("2026-10-30T09:15:00Z")).redact == []
}

# ---------------------------------------------------------------------------------------------
# spend caps
# ---------------------------------------------------------------------------------------------

test_spend_up_to_the_cap_is_allowed if {
	decide(with_fields({"spent_today_usd": 249.9, "estimated_cost_usd": 0.1})).allow == true
	decide(with_fields({"spent_today_usd": 0, "estimated_cost_usd": 250})).allow == true
	decide(with_fields({"spent_today_usd": 0, "estimated_cost_usd": 0})).allow == true
}

test_spend_over_the_cap_is_denied if {
	d := decide(with_fields({"spent_today_usd": 249.9, "estimated_cost_usd": 0.100001}))
	d.deny == ["spend cap: tenant 'acme' may spend 250.00 USD a day on models; 249.90 spent today + 0.10 estimated for this call would exceed it"]
	e := decide(with_fields({"spent_today_usd": 300, "estimated_cost_usd": 0}))
	e.allow == false
}

test_each_tenant_has_its_own_cap if {
	decide(object.union(base, {"tenant": "globex", "spent_today_usd": 99, "estimated_cost_usd": 2})).allow == false
	decide(with_fields({"spent_today_usd": 99, "estimated_cost_usd": 2})).allow == true
}

test_spend_must_be_reported_as_numbers if {
	decide(json.remove(base, ["spent_today_usd"])).deny == ["spent_today_usd must be a number >= 0 (what the tenant's model calls cost today)"]
	decide(with_fields({"spent_today_usd": "1.25"})).deny == ["spent_today_usd must be a number >= 0 (what the tenant's model calls cost today)"]
	decide(with_fields({"spent_today_usd": -0.01})).allow == false
	decide(json.remove(base, ["estimated_cost_usd"])).deny == ["estimated_cost_usd must be a number >= 0 (what this call is expected to cost)"]
	decide(with_fields({"estimated_cost_usd": null})).allow == false
	decide(with_fields({"estimated_cost_usd": -1})).allow == false
}

test_tenant_without_a_cap_is_denied if {
	d := decide(base) with data.baton.tenants.acme as {"allowed_model_regions": ["eu"], "pii": "redact"}
	d.deny == ["policy data is incomplete: tenant 'acme' needs daily_spend_cap_usd, a number >= 0"]
	e := decide(base) with data.baton.tenants.acme.daily_spend_cap_usd as "250"
	e.allow == false
	f := decide(base) with data.baton.tenants.acme.daily_spend_cap_usd as -1
	f.allow == false
}

test_a_zero_cap_stops_every_paid_call if {
	decide(base).allow == false with data.baton.tenants.acme.daily_spend_cap_usd as 0
	decide(with_fields({"spent_today_usd": 0, "estimated_cost_usd": 0})).allow == true with data.baton.tenants.acme.daily_spend_cap_usd as 0
}

test_actions_without_a_model_need_no_spend if {
	decide(json.remove(email_at("2026-10-30T09:15:00Z"), ["spent_today_usd", "estimated_cost_usd"])).allow == true
}

# ---------------------------------------------------------------------------------------------
# business-hours windows (send_customer_email: mon-fri 08:00-18:00 at UTC+01:00)
# ---------------------------------------------------------------------------------------------

test_inside_the_window_is_allowed if {
	decide(email_at("2026-10-30T09:15:00Z")).allow == true # fri 10:15 local
	decide(email_at("2026-10-26T07:00:00Z")).allow == true # mon 08:00 local: start is inclusive
	decide(email_at("2026-10-30T16:59:59Z")).allow == true # fri 17:59 local
}

test_outside_the_window_is_denied if {
	d := decide(email_at("2026-10-31T09:15:00Z"))
	d.deny == ["'send_customer_email' is only allowed mon,tue,wed,thu,fri 08:00-18:00 (UTC+01:00); now is sat 10:15 there"]
	decide(email_at("2026-10-30T17:00:00Z")).deny == ["'send_customer_email' is only allowed mon,tue,wed,thu,fri 08:00-18:00 (UTC+01:00); now is fri 18:00 there"]
	decide(email_at("2026-10-26T06:59:00Z")).allow == false # mon 07:59 local
	decide(email_at("2026-11-01T12:00:00Z")).allow == false # sunday
}

test_the_offset_of_now_is_honoured if {
	# 12:15 at UTC-05:00 is 17:15 UTC, 18:15 in the window's zone: closed.
	decide(email_at("2026-10-30T12:15:00-05:00")).allow == false

	# 23:30 on Sunday at UTC-10:00 is Monday 10:30 at UTC+01:00: open.
	decide(email_at("2026-11-01T23:30:00-10:00")).allow == true

	# Fractions of a second and lower-case t/z are RFC 3339 too.
	decide(email_at("2026-10-30t09:15:00.123456z")).allow == true
}

test_the_window_offset_moves_the_day if {
	# Friday 23:30 UTC is Saturday 01:30 at UTC+02:00.
	decide(email_at("2026-10-30T23:30:00Z")).allow == false with data.baton.windows.send_customer_email as {
		"days": ["sat"], "start_hour": 1, "end_hour": 2, "utc_offset_minutes": 0,
	}
	decide(email_at("2026-10-30T23:30:00Z")).allow == true with data.baton.windows.send_customer_email as {
		"days": ["sat"], "start_hour": 1, "end_hour": 2, "utc_offset_minutes": 120,
	}
	d := decide(email_at("2026-10-30T12:00:00Z")) with data.baton.windows.send_customer_email as {
		"days": ["sat"], "start_hour": 0, "end_hour": 24, "utc_offset_minutes": -330,
	}
	d.deny == ["'send_customer_email' is only allowed sat 00:00-24:00 (UTC-05:30); now is fri 06:30 there"]
}

test_a_windowed_action_needs_a_valid_now if {
	msg := "the request has no valid time: now must be an RFC 3339 time such as 2026-10-30T09:15:00Z ('send_customer_email' may only run at certain hours)"
	decide(json.remove(email_at("x"), ["now"])).deny == [msg]
	decide(email_at(1793352900)).deny == [msg]
	decide(email_at("2026-10-30 09:15:00")).deny == [msg]
	decide(email_at("2026-10-30T09:15:00")).deny == [msg] # no zone
	decide(email_at("2026-13-01T09:15:00Z")).deny == [msg]
	decide(email_at("2026-02-29T09:15:00Z")).deny == [msg] # 2026 is no leap year
	decide(email_at("2026-04-31T09:15:00Z")).deny == [msg]
	decide(email_at("2026-10-30T24:00:00Z")).deny == [msg]
	decide(email_at("2026-10-30T09:60:00Z")).deny == [msg]
	decide(email_at("2026-10-30T09:15:00+24:00")).deny == [msg]
	decide(email_at("2026-10-30T09:15:00+01:60")).deny == [msg]
	decide(email_at("2026-10-00T09:15:00Z")).deny == [msg]
}

test_leap_days if {
	decide(email_at("2028-02-29T09:00:00Z")).allow == true # tuesday
	decide(email_at("2000-02-29T09:00:00Z")).allow == true # tuesday; 2000 is a leap year
	decide(email_at("1900-02-29T09:00:00Z")).allow == false # 1900 is not
}

test_actions_without_a_window_ignore_the_clock if {
	decide(json.remove(base, ["now"])).allow == true
	decide(with_fields({"now": "2026-10-31T03:00:00Z"})).allow == true
}

test_broken_window_data_denies if {
	msg := "policy data is incomplete: data.baton.windows.send_customer_email needs days (a non-empty list of mon..sun), whole start_hour < end_hour within 0..24 and a whole utc_offset_minutes within -840..840"
	good := {"days": ["fri"], "start_hour": 8, "end_hour": 18, "utc_offset_minutes": 60}
	request := email_at("2026-10-30T09:15:00Z")
	decide(request).allow == true with data.baton.windows.send_customer_email as good
	every broken in [
		object.union(good, {"days": []}),
		object.union(good, {"days": ["friday"]}),
		object.union(good, {"days": "fri"}),
		object.union(good, {"start_hour": 18}),
		object.union(good, {"start_hour": 7.5}),
		object.union(good, {"end_hour": 25}),
		object.union(good, {"utc_offset_minutes": "60"}),
		object.union(good, {"utc_offset_minutes": 30.5}),
		object.union(good, {"utc_offset_minutes": 900}),
		json.remove(good, ["utc_offset_minutes"]),
		"always",
	] {
		decide(request).deny == [msg] with data.baton.windows.send_customer_email as broken
	}
}

test_window_numbers_may_arrive_as_integral_floats if {
	decide(email_at("2026-10-30T16:30:00Z")).deny == ["'send_customer_email' is only allowed fri 08:00-17:00 (UTC+01:00); now is fri 17:30 there"] with data.baton.windows.send_customer_email as {
		"days": ["fri"], "start_hour": 8.0, "end_hour": 17.0, "utc_offset_minutes": 60.0,
	}
}

# ---------------------------------------------------------------------------------------------
# the date arithmetic
# ---------------------------------------------------------------------------------------------

test_civil_days if {
	agent_call.civil_days(1970, 1, 1) == 0
	agent_call.civil_days(1969, 12, 31) == -1
	agent_call.civil_days(2000, 3, 1) == 11017
	agent_call.civil_days(2026, 10, 30) == 20756
	agent_call.civil_days(2028, 2, 29) == 21243
	agent_call.civil_days(1600, 3, 1) == -135080
}

test_weekday_name if {
	agent_call.weekday_name(0) == "thu"
	agent_call.weekday_name(-1) == "wed" # 1969-12-31 23:59
	agent_call.weekday_name(20756 * 1440) == "fri"
	agent_call.weekday_name(-135080 * 1440) == "wed"
}

test_offset_text if {
	agent_call.offset_text(60) == "+01:00"
	agent_call.offset_text(0) == "+00:00"
	agent_call.offset_text(-330) == "-05:30"
	agent_call.offset_text(840) == "+14:00"
}

test_digits if {
	agent_call.digits2("08") == 8
	agent_call.digits2("00") == 0
	agent_call.digits4("0999") == 999
	agent_call.digits4("2026") == 2026
}

test_days_in_month if {
	agent_call.days_in_month(2026, 2) == 28
	agent_call.days_in_month(2028, 2) == 29
	agent_call.days_in_month(2100, 2) == 28
	agent_call.days_in_month(2000, 2) == 29
	agent_call.days_in_month(2026, 4) == 30
	agent_call.days_in_month(2026, 12) == 31
}

test_local_day_rounds_down_on_both_engines if {
	agent_call.local_day(-1) == -1
	agent_call.local_day(0) == 0
	agent_call.local_day(1439) == 0
	agent_call.local_day(-1440) == -1
	agent_call.local_day(-1441) == -2
	agent_call.minute_of_day(-1) == 1439
}

test_year_zero_is_refused if {
	decide(email_at("0000-01-03T09:00:00Z")).allow == false
	decide(email_at("0001-01-01T09:00:00Z")).allow == true # a monday
}
