"""Search attribute keys (see contracts.SEARCH_ATTRIBUTES for names and types)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PROCESS = SearchAttributeKey.for_keyword("BatonProcess")
TENANT = SearchAttributeKey.for_keyword("BatonTenant")
RISK = SearchAttributeKey.for_keyword("BatonRisk")
APPROVAL_STATE = SearchAttributeKey.for_keyword("BatonApprovalState")
COST_USD = SearchAttributeKey.for_float("BatonCostUsd")
SHADOW = SearchAttributeKey.for_bool("BatonShadow")

ALL = [PROCESS, TENANT, RISK, APPROVAL_STATE, COST_USD, SHADOW]
