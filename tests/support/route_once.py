"""A test workflow that runs ONE routed agent activity (by name) and returns its result, so the
router's behaviour is tested through a real worker, real retries and a real history."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.contracts.support import Triage, TriageInput


@workflow.defn(name="RouteOnceForTests")
class RouteOnce:
    @workflow.run
    async def run(self, inp: TriageInput) -> Triage:
        return await workflow.execute_activity(
            "triage_ticket",
            inp,
            result_type=Triage,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=50),
                maximum_attempts=3,
                non_retryable_error_types=["BudgetExceeded", "PolicyDenied", "NoEligibleModel"],
            ),
        )
