"""HR onboarding (workflows/hr_onboarding.py) and its blackboard (workflows/blackboard.py): the
new hire, board entries and writes, entitlements, grants and revokes, the input, result, status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from workflows.contracts.base import (
    EMPLOYEE_ID_PATTERN,
    STABLE_VERSION,
    AgentInput,
    ApprovalIssuer,
    Contract,
    ProcessInput,
    TenantName,
    TokenUsage,
    known_version,
    must_match,
)
from workflows.contracts.governance import (
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalRequest,
    BusinessClaim,
    CompensationInput,
    PolicyDecision,
    claim_field,
)
from workflows.contracts.security import Id, Name

# --------------------------------------------------------------------------------------------
# Blackboard (workflows/blackboard.py) and HR onboarding (workflows/hr_onboarding.py)
# --------------------------------------------------------------------------------------------


class BoardEntry(Contract):
    """One accepted write to a versioned blackboard: who wrote what, why, when, at which version."""

    key: str
    value: Any
    version: int = Field(ge=1, description="Version of this key after the write (1 = first).")
    seq: int = Field(ge=1, description="Position in the board's history (all keys).")
    author: str
    reason: str
    at: datetime


class BoardSlot(Contract):
    """What an agent reads of one key: its value and the version it read (0 = never written)."""

    value: Any = None
    version: int = 0


class BoardWrite(Contract):
    """A proposed write: applied only if the key is still at ``expected_version``."""

    key: str = Field(min_length=1)
    value: Any
    expected_version: int = Field(ge=0)
    reason: str = Field(min_length=1)


class PersistBoardInput(Contract):
    board: str = Field(description="Board name within the run, e.g. 'onboarding'.")
    entries: list[BoardEntry]


class NewHire(Contract):
    """A new hire as the HRIS holds it."""

    tenant: str
    employee_id: str
    full_name: str
    role: str = Field(description="e.g. engineer: which entitlements policy lets the hire have.")
    department: str
    country: str = Field(description="Where the hire works, e.g. 'DE'.")
    manager: str
    start_date: str = Field(description="First working day, YYYY-MM-DD.")
    id_document_verified: bool = Field(
        description="An identity document was checked; policy grants nothing until it was."
    )


class LoadHireInput(Contract):
    tenant: str
    employee_id: str


class BoardAgentInput(AgentInput):
    """What a blackboard agent sees: the hire and a snapshot of the board (with versions)."""

    tenant: str
    employee_id: str
    hire: NewHire
    board: dict[str, BoardSlot]


class BoardProposal(Contract):
    writes: list[BoardWrite]
    usage: TokenUsage


class Entitlement(Contract):
    system: str = Field(min_length=1)
    name: str = Field(min_length=1)

    @property
    def label(self) -> str:
        return f"{self.system}:{self.name}"


class GrantInput(Contract):
    tenant: str
    employee_id: str
    hire: NewHire
    entitlement: Entitlement
    requested_by: str
    reason: str
    approval: ApprovalGrant | None = None
    idempotency_key: str
    #: a shadow run's grant: decided by policy, recorded in the shadow outbox, not granted
    shadow: bool = False
    claim: BusinessClaim | None = claim_field()


class GrantOutcome(Contract):
    decision: PolicyDecision
    grant_id: str | None = None  # set only when granted


class RevokeInput(CompensationInput):
    """Revoke the grant made under ``original_key``."""

    shadow: bool = False


class RevokeOutcome(Contract):
    revoked: bool
    detail: str


class OnboardingInput(ProcessInput):
    """Onboard one new hire of one tenant (the hire must be in the HRIS); ``requested_by``,
    ``approval_timeout_seconds`` and ``budget``: ProcessInput."""

    tenant: TenantName = Field(description="Tenant, e.g. 'acme'.")
    employee_id: Id = Field(description="HRIS employee id, e.g. 'E1001'.")
    max_conflict_retries: int = Field(
        default=5, ge=0, le=20, description="Re-runs of an agent whose write was stale."
    )
    version: Annotated[Name, known_version("hr_onboarding")] = Field(
        default=STABLE_VERSION,
        description="Process version (PROCESS_VERSIONS['hr_onboarding']). Left out, BatonClient "
        "asks the process's canary (sticky per business key).",
    )
    shadow: bool = Field(
        default=False,
        description="Shadow run: every agent step runs and policy is asked, grants and revokes "
        "are only recorded in the shadow outbox, the manager's approval is simulated from "
        "policy. Business key 'shadow/onboarding/<tenant>/<employee id>'.",
    )
    approval_trust: ApprovalIssuer = None

    @field_validator("employee_id")
    @classmethod
    def _employee_id(cls, v: str) -> str:
        return must_match(
            EMPLOYEE_ID_PATTERN, v, "letters, digits, '_' or '-' (1-63 chars), e.g. 'E1001'"
        )

    def workflow_id(self) -> str:
        key = f"onboarding/{self.tenant}/{self.employee_id}"
        return f"shadow/{key}" if self.shadow else key


class GrantedEntitlement(Contract):
    system: str
    name: str
    grant_id: str
    approved_by: list[str] = []


class OnboardingResult(Contract):
    tenant: str
    employee_id: str
    identity: Any
    policies: Any
    granted: list[GrantedEntitlement]
    approvals: list[ApprovalOutcome]
    board_version: int
    conflicts: int
    tokens: int
    cost_usd: float


class OnboardingStatus(Contract):
    workflow_id: str
    process: str
    stage: str
    approval_state: str
    pending: list[ApprovalRequest]
    granted: list[GrantedEntitlement]
    compensated: list[str]
    board_version: int
    conflicts: int


BoardAgentInput.model_rebuild()
BoardProposal.model_rebuild()


__all__ = [
    "BoardAgentInput",
    "BoardEntry",
    "BoardProposal",
    "BoardSlot",
    "BoardWrite",
    "Entitlement",
    "GrantInput",
    "GrantOutcome",
    "GrantedEntitlement",
    "LoadHireInput",
    "NewHire",
    "OnboardingInput",
    "OnboardingResult",
    "OnboardingStatus",
    "PersistBoardInput",
    "RevokeInput",
    "RevokeOutcome",
]
