"""Contracts of the orphan doctor and repair (workflows/repair.py, activities/orphans.py).

An orphan is a run that ended without completing or compensating (terminated, timed out, or
failed/cancelled with its saga unfinished) and left side effects standing in a system of record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from workflows.contracts.base import Contract

REPAIR_WORKFLOW = "BatonRepair"
DOCTOR_WORKFLOW = "BatonDoctor"
DOCTOR_SCHEDULE_ID = "baton-doctor"

#: Closed states that may leave side effects standing. Completed runs keep theirs by design.
ORPHAN_STATUSES = ("TERMINATED", "TIMED_OUT", "FAILED", "CANCELED")

EffectKind = Literal["journal_posting", "entitlement", "customer_action", "document_review"]


class StandingEffect(Contract):
    """One side effect of a run that is still in force, and the compensation that undoes it."""

    kind: EffectKind
    id: str = Field(description="The row's id in its system of record (posting id, grant id...).")
    key: str = Field(description="The idempotency key it was made under.")
    summary: str
    at: datetime
    compensation: str = Field(description="The compensation activity that undoes it.")


class OrphanRun(Contract):
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    task_queue: str
    started_at: datetime
    closed_at: datetime | None
    effects: list[StandingEffect]


class FindEffectsInput(Contract):
    workflow_id: str = Field(min_length=1)
    run_id: str = Field(default="", description="Empty: the newest run of the workflow id.")


class RunEffects(Contract):
    """The run a repair is about (as visibility knows it) and what it left standing."""

    run: OrphanRun
    #: why the run may not be repaired (still running, or it completed); None: it may
    refusal: str | None = None


class DoctorInput(Contract):
    task_queue: str = Field(default="", description="Only runs of this task queue ('' = all).")
    since_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="Runs closed this recently."
    )
    limit: int = Field(default=500, ge=1, le=10_000, description="Closed runs examined at most.")


class DoctorReport(Contract):
    checked_runs: int
    orphans: list[OrphanRun]
    checked_at: datetime


class RepairInput(Contract):
    workflow_id: str = Field(min_length=1, description="The orphaned run's workflow id.")
    run_id: str = Field(default="", description="Empty: the newest run of the workflow id.")
    requested_by: str = Field(min_length=1)
    reason: str = Field(default="repair of an orphaned run", min_length=1)


class RepairedEffect(Contract):
    effect: StandingEffect
    undone: bool
    detail: str


class RepairResult(Contract):
    workflow_id: str
    run_id: str
    status: Literal["repaired", "nothing_to_repair", "refused"]
    message: str
    repaired: list[RepairedEffect] = []


__all__ = [
    "DOCTOR_SCHEDULE_ID",
    "DOCTOR_WORKFLOW",
    "DoctorInput",
    "DoctorReport",
    "EffectKind",
    "FindEffectsInput",
    "ORPHAN_STATUSES",
    "OrphanRun",
    "REPAIR_WORKFLOW",
    "RepairInput",
    "RepairResult",
    "RepairedEffect",
    "RunEffects",
    "StandingEffect",
]
