"""What every `baton` command module shares: the exit codes, the error a command raises to exit
with a message, the typed client built from settings, and the printers. Sub-command modules
(baton/cli_*.py) and the demo import these from here, never from baton/cli.py, so no CLI
module imports another in a circle (and `python -m baton.cli` never loads a second copy).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from baton.settings import Settings
from workflows.errors import BatonError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "_client",
    "_print_json",
    "_print_request",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(BatonError):
    """A command failed in a way the user can act on: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


async def _client(settings: Settings):  # type: ignore[no-untyped-def]
    from workflows.client import BatonClient

    try:
        codec = settings.payload_codec()
        trust = settings.approval_trust()
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        client = await asyncio.wait_for(
            BatonClient.connect(
                None if settings.temporal_profile else settings.temporal_address,
                namespace=settings.temporal_namespace,
                profile=settings.temporal_profile,
                task_queue=settings.task_queue,
                payload_codec=codec,
            ),
            timeout=10,
        )
    except Exception as err:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address}: {err}\n"
            "start the local stack with `make up`, or set TEMPORAL_ADDRESS"
        ) from None
    client.approval_trust = trust
    return client


def _print_json(value: Any) -> None:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    print(json.dumps(value, indent=2, default=str))


def _print_request(workflow_id: str, request: Any) -> None:
    from workflows.approval_gate import describe, still_needed

    print(f"request {request.request_id} on {workflow_id} (round {request.round})")
    print(f"  {request.summary}")
    print(
        f"  requested by {request.requested_by} at {request.requested_at:%Y-%m-%d %H:%M:%S}Z, "
        f"SLA deadline {request.deadline:%Y-%m-%d %H:%M:%S}Z "
        f"(escalation tier {request.escalation_level} of {len(request.escalation)})"
    )
    print(
        f"  needs {describe(request.requirements)}; still needed: {describe(still_needed(request))}"
    )
    print(
        f"  who may decide: {', '.join(request.eligible_approvers) or 'nobody'} "
        f"(roles {', '.join(request.approver_roles)})"
    )
    for vote in request.approvals:
        print(f"  approved by {vote.approver} as {vote.role} at {vote.at:%Y-%m-%d %H:%M:%S}Z")
    print(f"  action digest: {request.action_digest}")
    for entry in request.entries:
        print(f"    {entry.entry_id:<16} {entry.account:<26} {entry.amount:>14}  {entry.rationale}")
    for finding in request.compliance_findings:
        print(f"    compliance {finding.severity}: {finding.entry_id}: {finding.note}")
