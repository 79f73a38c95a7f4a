"""The typed client's document-review calls (mixed into ``workflows.client.BatonClient``).

    handle = await client.start_document_review(
        DocumentReviewInput(tenant="acme", batch_id="b-42", requested_by="lee",
                            tiers=DEFAULT_TIERS, tasks=[...]))
    print(await client.document_review_status(handle.id))
    result = await handle.result()        # DocumentReviewResult

Business key: ``document-review/<tenant>/<batch id>``; a second start of a running batch is
refused (``ProcessAlreadyStarted``) or joined (``join_existing=True``).
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from workflows import visibility
from workflows.client_errors import ProcessAlreadyStarted
from workflows.contracts_auction import (
    DOCUMENT_REVIEW_PROCESS,
    AuctionStatus,
    DocumentReviewInput,
    DocumentReviewResult,
)
from workflows.document_review import DocumentReviewWorkflow


class DocumentReviewClient:
    client: Client
    task_queue: str

    async def _start_keyed(
        self, run: Any, inp: Any, workflow_id: str, *, join_existing: bool, **options: Any
    ) -> Any:
        """Start ``run`` under its business key ``workflow_id``: a run of that key still
        running is attached to with ``join_existing``, else refused (ProcessAlreadyStarted)."""
        try:
            return await self.client.start_workflow(
                run,
                inp,
                id=workflow_id,
                task_queue=self.task_queue,
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.USE_EXISTING
                    if join_existing
                    else WorkflowIDConflictPolicy.FAIL
                ),
                **options,
            )
        except WorkflowAlreadyStartedError:
            raise ProcessAlreadyStarted(workflow_id) from None

    async def start_document_review(
        self, inp: DocumentReviewInput | dict[str, Any], *, join_existing: bool = False
    ) -> WorkflowHandle[DocumentReviewWorkflow, DocumentReviewResult]:
        """Start (or attach to) the allocation of one batch of reviews. A dict is validated
        first (a bad field raises ``pydantic.ValidationError`` naming it; nothing starts)."""

        if not isinstance(inp, DocumentReviewInput):
            inp = DocumentReviewInput.model_validate(inp)
        workflow_id = inp.workflow_id()
        return await self._start_keyed(
            DocumentReviewWorkflow.run,
            inp,
            workflow_id,
            join_existing=join_existing,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(visibility.PROCESS, DOCUMENT_REVIEW_PROCESS),
                    SearchAttributePair(visibility.TENANT, inp.tenant),
                ]
            ),
            memo={"requested_by": inp.requested_by, "batch_id": inp.batch_id},
            static_summary=f"Document review {inp.tenant} {inp.batch_id} "
            f"({len(inp.tasks)} tasks, {len(inp.tiers)} tiers)",
            static_details=(
                f"Each of the {len(inp.tasks)} reviews is auctioned among the tiers "
                f"{', '.join(t.name for t in inp.tiers)}; see the `auction_status` query "
                "and the audit trail (auction.bid / auction.awarded)."
            ),
        )

    def document_review(
        self, workflow_id: str
    ) -> WorkflowHandle[DocumentReviewWorkflow, DocumentReviewResult]:
        return self.client.get_workflow_handle_for(DocumentReviewWorkflow.run, workflow_id)

    async def document_review_status(self, workflow_id: str) -> AuctionStatus:
        return await self.document_review(workflow_id).query(DocumentReviewWorkflow.status)


__all__ = [
    "DocumentReviewClient",
]
