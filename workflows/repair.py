"""Repair of an orphaned run, and the scheduled doctor that finds orphans.

``BatonRepair`` (one per orphaned workflow id, id ``repair/<workflow id>``):

1. ``find_run_effects`` (activities/orphans.py): the run as visibility knows it and what it
   left standing; a run that is still running, completed or continued as new is refused;
2. for each standing effect, the process's own compensation activity (``reverse_journal_entry``,
   ``revoke_entitlement``, ``revert_customer_action``, ``retract_review``) under the idempotency
   key the run's saga would have used (``<key>/reverse`` ...), so nothing is undone twice, even
   if the saga got partway or two repairs race; each writes its own audit row with its change;
3. the run's business-key claims are released (``release_business_keys``, activities/claims.py):
   nothing of it stands any more, so its tenant's period, employee or customer may run again;
4. ``repair.completed`` (or ``repair.nothing_to_repair`` / ``repair.refused``) in the audit
   trail of the repair AND of the orphaned run, so ``baton audit show <workflow id>`` tells it.

A second repair finds nothing standing and says so. ``BatonDoctor`` runs ``find_orphans`` once
(a Temporal Schedule starts it: ``baton doctor --schedule``) and returns the report; the
activity audits what it found.

Deterministic: no I/O, no clock but ``workflow.now()``.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows.audit_trail import AuditTrail
from workflows.contracts import AuditEvent, ReverseEntryInput, RevokeInput
from workflows.contracts.auction import RetractReviewInput
from workflows.contracts.customer import RevertInput
from workflows.contracts.integrity import (
    DOCTOR_WORKFLOW,
    REPAIR_WORKFLOW,
    DoctorInput,
    DoctorReport,
    FindEffectsInput,
    RepairedEffect,
    RepairInput,
    RepairResult,
    RunEffects,
    StandingEffect,
)
from workflows.presets import PRESETS

#: Replay safety: repairs started before business-key claims released none.
RELEASE_CLAIMS_PATCH = "repair-releases-business-keys"

with workflow.unsafe.imports_passed_through():
    from activities.claims import ClaimActivities
    from activities.orphans import IntegrityActivities


def _compensation_input(effect: StandingEffect, reason: str) -> Any:
    """The input the run's own saga would have given the compensation (same keys)."""
    if effect.compensation == "reverse_journal_entry":
        return ReverseEntryInput(
            original_key=effect.key, reason=reason, idempotency_key=f"{effect.key}/reverse"
        )
    if effect.compensation == "revoke_entitlement":
        return RevokeInput(
            original_key=effect.key, reason=reason, idempotency_key=f"{effect.key}/revoke"
        )
    if effect.compensation == "revert_customer_action":
        return RevertInput(
            original_key=effect.key, reason=reason, idempotency_key=f"{effect.key}/revert"
        )
    if effect.compensation == "retract_review":
        return RetractReviewInput(original_key=effect.key, reason=reason)
    raise ValueError(f"no compensation named {effect.compensation!r}")


def _undone(result: Any) -> tuple[bool, str]:
    """Each compensation reports in its own shape; None/False mean it found nothing to undo."""
    if isinstance(result, dict):
        flag = bool(result.get("revoked", result.get("reverted", False)))
        return flag, str(result.get("detail", ""))
    if isinstance(result, bool):
        return result, "retracted" if result else "nothing to retract"
    if result is None:
        return False, "nothing was posted"
    return True, f"reversed by {result}"


@workflow.defn(name=REPAIR_WORKFLOW)
class RepairWorkflow:
    @workflow.run
    async def run(self, inp: RepairInput) -> RepairResult:
        found: RunEffects = await workflow.execute_activity_method(
            IntegrityActivities.find_run_effects,
            FindEffectsInput(workflow_id=inp.workflow_id, run_id=inp.run_id),
            start_to_close_timeout=PRESETS["canary"].start_to_close,
            retry_policy=PRESETS["canary"].retry,
            summary=f"doctor: standing side effects of {inp.workflow_id}",
        )
        run = found.run
        repaired: list[RepairedEffect] = []
        if found.refusal is not None:
            status, message = "refused", f"{run.workflow_id} ({run.status}): {found.refusal}"
        elif not run.effects:
            status = "nothing_to_repair"
            message = (
                f"{run.workflow_id} run {run.run_id} ({run.status}) has no side effects "
                "standing: nothing to repair (already repaired or compensated)"
            )
        else:
            reason = f"{inp.reason} ({run.status.lower()} run {run.run_id}, by {inp.requested_by})"
            workflow.set_current_details(
                f"repairing {run.workflow_id} ({run.status}, run {run.run_id}): undoing "
                f"{len(run.effects)} side effect(s) for {inp.requested_by}"
            )
            preset = PRESETS["compensation"]
            for effect in run.effects:
                result = await workflow.execute_activity(
                    effect.compensation,
                    _compensation_input(effect, reason),
                    start_to_close_timeout=preset.start_to_close,
                    retry_policy=preset.retry,
                    summary=f"repair: {effect.compensation} {effect.id}",
                )
                undone, detail = _undone(result)
                repaired.append(RepairedEffect(effect=effect, undone=undone, detail=detail))
            status = "repaired"
            message = (
                f"{run.workflow_id} run {run.run_id} ({run.status}): "
                f"{sum(r.undone for r in repaired)} of {len(repaired)} side effect(s) undone"
            )
        released: list[str] = []
        if found.refusal is None and workflow.patched(RELEASE_CLAIMS_PATCH):
            preset = PRESETS["compensation"]
            released = await workflow.execute_activity_method(
                ClaimActivities.release_business_keys,
                FindEffectsInput(workflow_id=run.workflow_id, run_id=run.run_id),
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"repair: release the business keys of {run.workflow_id}",
            )
            if released:
                message += f"; business key released: {', '.join(released)}"
        await self._audit(inp, run.run_id, status, message, repaired, released)
        return RepairResult(
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            status=status,  # type: ignore[arg-type]
            message=message,
            repaired=repaired,
        )

    async def _audit(
        self,
        inp: RepairInput,
        orphan_run_id: str,
        status: str,
        message: str,
        repaired: list[RepairedEffect],
        released: list[str] | None = None,
    ) -> None:
        info = workflow.info()
        detail = {
            "workflow_id": inp.workflow_id,
            "run_id": orphan_run_id,
            "repair": f"{info.workflow_id}/{info.run_id}",
            "undone": [
                {"kind": r.effect.kind, "id": r.effect.id, "detail": r.detail}
                for r in repaired
                if r.undone
            ],
            **({"released": released} if released else {}),
        }
        common = {
            "actor": inp.requested_by,
            "action": f"repair.{status}",
            "detail": detail,
            "rationale": f"{inp.reason}: {message}",
        }
        events = [
            AuditEvent(workflow_id=info.workflow_id, run_id=info.run_id, seq="wf/repair", **common),
            # the orphaned run's own trail says it was repaired, and by which repair
            AuditEvent(
                workflow_id=inp.workflow_id,
                run_id=orphan_run_id,
                seq=f"repair/{info.run_id}",
                **common,
            ),
        ]
        await AuditTrail.write(events, f"audit: repair.{status}")


@workflow.defn(name=DOCTOR_WORKFLOW)
class DoctorWorkflow:
    @workflow.run
    async def run(self, inp: DoctorInput) -> DoctorReport:
        return await workflow.execute_activity_method(
            IntegrityActivities.find_orphans,
            inp,
            start_to_close_timeout=PRESETS["canary"].start_to_close * 4,
            retry_policy=PRESETS["canary"].retry,
            summary="doctor: runs that ended leaving side effects standing",
        )


__all__ = [
    "DoctorWorkflow",
    "RELEASE_CLAIMS_PATCH",
    "RepairWorkflow",
]
