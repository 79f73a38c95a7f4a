"""Search attribute keys (see contracts.SEARCH_ATTRIBUTES for names and types)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PROCESS = SearchAttributeKey.for_keyword("BatonProcess")
TENANT = SearchAttributeKey.for_keyword("BatonTenant")
RISK = SearchAttributeKey.for_keyword("BatonRisk")
APPROVAL_STATE = SearchAttributeKey.for_keyword("BatonApprovalState")
#: roles that may decide on the pending approval now (the approver inbox filters on it)
PENDING_ROLES = SearchAttributeKey.for_keyword_list("BatonPendingRoles")
COST_USD = SearchAttributeKey.for_float("BatonCostUsd")
SHADOW = SearchAttributeKey.for_bool("BatonShadow")
#: true while a run holds at a step because the kill switch is engaged
HELD = SearchAttributeKey.for_bool("BatonHeld")
#: the run's process version (canary assignment: "stable" or a candidate, PROCESS_VERSIONS)
VERSION = SearchAttributeKey.for_keyword("BatonVersion")

#: tokens the run's routed model calls were charged (every attempt; activities/router.py)
TOKENS = SearchAttributeKey.for_int("BatonTokens")

ALL = [
    PROCESS,
    TENANT,
    RISK,
    APPROVAL_STATE,
    PENDING_ROLES,
    COST_USD,
    SHADOW,
    HELD,
    VERSION,
    TOKENS,
]

__all__ = [
    "ALL",
    "APPROVAL_STATE",
    "COST_USD",
    "HELD",
    "PENDING_ROLES",
    "PROCESS",
    "RISK",
    "SHADOW",
    "TENANT",
    "TOKENS",
    "VERSION",
]
