"""Every model that crosses a Temporal boundary, plus task-queue and search-attribute names.

This package owns the public data contract of Baton: workflow inputs and results, activity inputs
and outputs, signal/update/query payloads, one module per area (base, security, ledger, governance,
finance, hr, customer, support, auction, tools, knowledge, ...). Its modules import only pydantic,
the standard library and each other (never this ``__init__``), so the workflow sandbox, the
activities, the client and the CLI can all share them. ``from workflows.contracts import X``
keeps the names the single module had: the base, governance, finance close and HR onboarding.
"""

from __future__ import annotations

from workflows.contracts import base, finance, governance, hr, ledger
from workflows.contracts.base import *  # noqa: F403 (the names of base.__all__)
from workflows.contracts.finance import *  # noqa: F403
from workflows.contracts.governance import *  # noqa: F403
from workflows.contracts.hr import *  # noqa: F403
from workflows.contracts.ledger import *  # noqa: F403

__all__ = [*base.__all__, *ledger.__all__, *governance.__all__, *finance.__all__, *hr.__all__]
