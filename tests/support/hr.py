"""The new hire the HR onboarding tests (and the real-model run) onboard."""

from __future__ import annotations

import uuid
from typing import Any

from activities.hr import seed_new_hire
from tests.conftest import Harness
from workflows.contracts import NewHire


def a_hire(tenant: str, **overrides: Any) -> NewHire:
    """Sam Okafor, an engineer in Germany reporting to maya, with a fresh employee id;
    ``overrides``: any other field. Not seeded anywhere: see ``new_hire``."""
    return NewHire.model_validate(
        {
            "tenant": tenant,
            "employee_id": f"E{uuid.uuid4().hex[:8]}",
            "full_name": "Sam Okafor",
            "role": "engineer",
            "department": "engineering",
            "country": "DE",
            "manager": "maya",
            "start_date": "2026-12-01",
            "id_document_verified": True,
            **overrides,
        }
    )


def new_hire(h: Harness, **overrides: Any) -> NewHire:
    """``a_hire`` of the harness's tenant, seeded in its HRIS (ready to onboard)."""
    hire = a_hire(h.tenant, **overrides)
    seed_new_hire(h.db, hire)
    return hire


def start(h: Harness, hire: NewHire) -> dict[str, Any]:
    """The onboarding input for ``hire``, requested by hana of HR."""
    return {"tenant": hire.tenant, "employee_id": hire.employee_id, "requested_by": "hana"}
