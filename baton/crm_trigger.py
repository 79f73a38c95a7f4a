"""The CRM trigger: starts one customer onboarding per "new high-value customer" event.

    outcomes = await dispatch_new_customers(client, db)

Reads the CRM's event table (``crm_event``, activities/customer.py) for events not handled yet,
starts ``CustomerOnboarding`` for each through the typed client (business key
``customer-onboarding/<tenant>/<customer>`` as workflow id), and marks the event handled with the
workflow and run it maps to. Idempotent at two levels: a re-delivered event (same CRM event id) is
stored once and handled once; a second event for the same customer, or a trigger that crashed
between starting and marking, finds the existing run (Temporal refuses a second one for the id),
so no customer is ever onboarded twice. Run it on a schedule or after each CRM webhook.

Must not: be imported by workflows.
"""

from __future__ import annotations

import asyncio

from activities.customer import mark_handled, unhandled_events
from activities.database import Database
from workflows.client import BatonClient
from workflows.contracts.customer import (
    NEW_HIGH_VALUE_CUSTOMER,
    CustomerOnboardingInput,
    TriggerOutcome,
)


async def dispatch_new_customers(client: BatonClient, db: Database) -> list[TriggerOutcome]:
    """Start a run for every unhandled new-high-value-customer event, oldest first."""
    outcomes: list[TriggerOutcome] = []
    events = await asyncio.to_thread(unhandled_events, db, NEW_HIGH_VALUE_CUSTOMER)
    for event in events:
        inp = CustomerOnboardingInput.from_event(event)
        handle, started = await client.start_customer_onboarding(inp)
        detail = "started" if started else "a run for this customer exists already"
        outcomes.append(
            TriggerOutcome(
                event_id=event.event_id,
                workflow_id=handle.id,
                started=started,
                run_id=handle.run_id or handle.result_run_id,  # the run this event maps to
                detail=detail,
            )
        )
        await asyncio.to_thread(mark_handled, db, event.event_id, handle.id, handle.run_id, detail)
    return outcomes
