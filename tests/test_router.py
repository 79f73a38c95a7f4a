"""The model router (activities/router.py) through a real worker, the real dev server, the real
OPA evaluator, SQLite and the `openai` SDK over HTTP against the scripted model server, which
serves several endpoints by path (/primary/v1, /backup/v1, /us/v1 ...)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Replayer, Worker

from activities import spend
from activities.agents import PROMPTS, AgentActivities
from activities.customer_agents import CUSTOMER_PROMPTS
from activities.router import CatalogueError, Router, load_catalogue, parse_catalogue
from activities.seed import seed_period
from tests.conftest import Harness, _harness, make_settings
from tests.support.config_files import assert_refuses_missing_and_broken
from tests.support.route_once import RouteOnce
from tests.support.scripted_model import Fault, ScriptedModelServer
from workflows.contracts import PROCESS_VERSIONS, STABLE_VERSION, ProcessVersion
from workflows.contracts.support import Triage, TriageInput
from workflows.plugin import BatonPlugin

REPO = Path(__file__).resolve().parents[1]
CAPS = ["triage", "research", "summarize", "ticket_update"]

#: No tier-0 signal; the small model's vocabulary sees "payment" and "charg" only: confident.
CHEAP_CONFIDENT = "My payment did not go through but I think I was charged anyway"
#: No tier-0 signal; the small model sees little, the large one more: cheap is unsure.
AMBIGUOUS = "The page keeps spinning and goes blank when I open my statement; the export fails too"


def model(name: str, endpoint: str, tier: str, region: str = "eu", **kw: Any) -> dict[str, Any]:
    cheap = tier == "cheap"
    return {
        "name": name,
        "endpoint": endpoint,
        "tier": tier,
        "price_per_1k_input": 0.00015 if cheap else 0.0025,
        "price_per_1k_output": 0.0006 if cheap else 0.01,
        "context_window": 16000 if cheap else 128000,
        "region": region,
        "capabilities": CAPS,
        **kw,
    }


def catalogue(server: ScriptedModelServer, *models: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = server.base_url
    default = [
        model("baton-rules-small", f"{base}/primary/v1", "cheap"),
        model("baton-rules-small", f"{base}/backup/v1", "cheap"),
        model("baton-rules-large", f"{base}/strong/v1", "strong"),
        model("baton-rules-large", f"{base}/strong-b/v1", "strong"),
    ]
    return {
        "models": list(models) or default,
        "task_classes": {
            "triage": {
                "capability": "triage",
                "min_confidence": 0.7,
                "tier0": "support_triage_rules",
            },
            "research": {"capability": "research"},
            "summarize": {"capability": "summarize"},
            "ticket_update": {"capability": "ticket_update"},
        },
        **kw,
    }


@pytest.fixture
async def routed(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> AsyncIterator[Any]:
    """A factory: ``async with routed(catalogue_dict) as h`` gives a harness whose worker routes
    over that catalogue and also runs the RouteOnce test workflow."""
    import contextlib

    model_server.reset()

    @contextlib.asynccontextmanager
    async def make(spec: dict[str, Any]) -> AsyncIterator[Harness]:
        path = tmp_path / f"models-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(spec))
        async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as h:
            yield h

    yield make
    model_server.reset()


async def route(h: Harness, text: str, **fields: Any) -> tuple[Triage, str]:
    wid = f"route-{uuid.uuid4().hex[:10]}"
    inp = TriageInput(tenant=h.tenant, case_id="C-1", subject="Help", body=text, **fields)
    async with Worker(
        h.temporal,
        task_queue=h.client.task_queue,
        workflows=[RouteOnce],
        activities=h.runtime.activities,
    ):
        result = await h.temporal.execute_workflow(
            RouteOnce.run, inp, id=wid, task_queue=h.client.task_queue
        )
    return result, wid


def cause_of(err: WorkflowFailureError) -> ApplicationError:
    cause = err.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    return cause.cause


def assert_refused_before_sending(
    err: WorkflowFailureError, model_server: Any, error_type: str, says: str
) -> None:
    """The run failed with ``error_type`` saying ``says``, and the classifier's model was
    never sent a request."""
    cause = cause_of(err)
    assert cause.type == error_type
    assert says in str(cause)
    assert model_server.attempts("triage_classifier") == 0


# -- the catalogue ----------------------------------------------------------------------------


def test_the_shipped_catalogue_is_valid_and_routes_every_agent() -> None:
    cat = load_catalogue(REPO / "config" / "models.json", "http://models.internal:9000/v1/")
    assert [m.tier for m in cat.candidates("triage")][:2] == ["cheap", "cheap"]
    # endpoints follow the worker's OPENAI_BASE_URL: the local stack, a test's server, a proxy
    assert [m.endpoint for m in cat.models] == [
        "http://models.internal:9000/v1",
        "http://models.internal:9000/backup/v1",
        "http://models.internal:9000/v1",
        "http://models.internal:9000/us/v1",
    ]
    # every agent that calls a model is routed, except the auction's, whose bids pick the model
    assert set(cat.agents) == set(PROMPTS) | set(CUSTOMER_PROMPTS)


def test_endpoint_placeholders_need_a_base_url_and_a_known_name() -> None:
    spec = json.loads((REPO / "config" / "models.json").read_text())
    with pytest.raises(CatalogueError, match=r"models.0.endpoint: \{openai_base_url\} needs"):
        parse_catalogue(spec, "config/models.json")
    spec["models"][1]["endpoint"] = "{model_host}/v1"
    with pytest.raises(CatalogueError, match=r"models.1.endpoint: unknown placeholder"):
        parse_catalogue(spec, "config/models.json", "http://127.0.0.1:1/v1")
    spec["models"][1]["endpoint"] = "https://api.example.com/v1"  # a literal URL stays as it is
    cat = parse_catalogue(spec, "config/models.json", "http://127.0.0.1:1/v1")
    assert cat.models[1].endpoint == "https://api.example.com/v1"


def test_a_model_with_its_own_api_key_needs_the_variable_set() -> None:
    spec = json.loads((REPO / "config" / "models.json").read_text())
    spec["models"][3]["api_key_env"] = "BATON_TEST_US_KEY"
    cat = parse_catalogue(spec, "config/models.json", "http://127.0.0.1:1/v1")
    agents = cast(AgentActivities, None)  # the router only stores it here
    with pytest.raises(CatalogueError, match="BATON_TEST_US_KEY, which are not set"):
        Router(agents, cat)
    router = Router(agents, cat, api_key="default", api_keys={"BATON_TEST_US_KEY": "us-key"})
    assert router.client(cat.models[3]).api_key == "us-key"
    assert router.client(cat.models[0]).api_key == "default"
    spec["models"][3]["api_key_env"] = "not a name"
    with pytest.raises(CatalogueError, match="models.3.api_key_env"):
        parse_catalogue(spec, "config/models.json", "http://127.0.0.1:1/v1")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda c: c["models"][0].pop("region"), "models.0.region: Field required"),
        (lambda c: c["models"][1].update(endpoint="ftp://x"), "models.1.endpoint"),
        (lambda c: c["models"][0].update(price_per_1k_input=-1), "models.0.price_per_1k_input"),
        (lambda c: c["models"][0].update(tier="medium"), "models.0.tier"),
        (lambda c: c["models"][0].update(context_window=0), "models.0.context_window"),
        (lambda c: c["task_classes"]["triage"].update(tier0="magic"), "unknown tier-0 rule set"),
        (lambda c: c["task_classes"].update(x={"capability": "poetry"}), "task_classes.x"),
        (lambda c: c["models"].append(dict(c["models"][0])), "listed twice"),
        (lambda c: c["models"][0].update(colour="red"), "models.0.colour: Extra inputs"),
        (lambda c: c.update(agents={"reconciler": "poetry"}), "agents.reconciler: unknown task"),
    ],
)
def test_catalogue_errors_name_the_field(change: Any, names: str) -> None:
    spec = json.loads((REPO / "config" / "models.json").read_text())
    change(spec)
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(spec, "config/models.json", "http://127.0.0.1:1/v1")
    assert names in str(err.value)
    assert "config/models.json is invalid" in str(err.value)


def test_a_missing_or_broken_catalogue_file_says_so(tmp_path: Path) -> None:
    assert_refuses_missing_and_broken(
        load_catalogue, CatalogueError, tmp_path, missing="does not exist"
    )


# -- routing ----------------------------------------------------------------------------------


async def test_tier0_answers_for_free_without_a_model_call(routed: Any, model_server: Any) -> None:
    async with routed(catalogue(model_server)) as h:
        result, wid = await route(h, "Please refund invoice 4411, I was charged twice")
    assert result.category == "billing"
    assert result.usage.tier == "tier0" and result.usage.cost_usd == 0
    assert model_server.attempts("triage_classifier") == 0
    assert spend.charges_of(h.db, wid) == []


async def test_low_confidence_escalates_to_the_strong_tier(routed: Any, model_server: Any) -> None:
    async with routed(catalogue(model_server)) as h:
        result, wid = await route(h, AMBIGUOUS)
    usage = result.usage
    assert [(c.tier, c.outcome) for c in usage.calls] == [
        ("cheap", "low_confidence"),
        ("strong", "ok"),
    ]
    assert usage.tier == "strong" and usage.model == "baton-rules-large"
    charges = spend.charges_of(h.db, wid)
    assert [c.outcome for c in charges] == ["low_confidence", "ok"]
    assert usage.run_cost_usd == pytest.approx(sum(c.cost_usd for c in charges))
    assert usage.run_cost_usd > 0


async def test_invalid_output_escalates_and_is_still_charged(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    # the cheap model's answer and its repair turn are both garbage: the strong tier answers
    bad = Fault.malformed('{"category": "billing"')
    model_server.script(bad, bad, match="baton-rules-small")
    async with routed(catalogue(model_server)) as h:
        result, wid = await route(h, CHEAP_CONFIDENT)
    assert [(c.tier, c.outcome) for c in result.usage.calls] == [
        ("cheap", "invalid_output"),
        ("cheap", "invalid_output"),
        ("strong", "ok"),
    ]
    charges = spend.charges_of(h.db, wid)
    assert [c.outcome for c in charges] == ["invalid_output", "invalid_output", "ok"]
    assert charges[0].prompt_tokens > 0 and charges[0].cost_usd > 0
    # the refused answers' notes say why, the repair turn's too
    notes = [c.note for c in result.usage.calls[:2]]
    assert notes[0].startswith("refused (schema): ") and "Invalid JSON" in notes[0]
    assert notes[1].endswith("[repair turn]")


async def test_a_5xx_falls_back_to_the_next_endpoint(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    model_server.script(Fault.status(503), match="/primary/")
    async with routed(catalogue(model_server)) as h:
        result, wid = await route(h, CHEAP_CONFIDENT)
    usage = result.usage
    assert [(c.endpoint.split("/")[-2], c.outcome) for c in usage.calls] == [
        ("primary", "server_error"),
        ("backup", "ok"),
    ]
    assert usage.tier == "cheap" and usage.endpoint.endswith("/backup/v1")
    assert [c.endpoint for c in spend.charges_of(h.db, wid)] == [usage.endpoint]  # 503 is free
    assert model_server.pending_faults == []


async def test_budget_refusal_sends_nothing(routed: Any, model_server: Any) -> None:
    async with routed(catalogue(model_server)) as h:
        with pytest.raises(WorkflowFailureError) as err:
            await route(h, AMBIGUOUS, budget={"run_usd": 0.00001})
    assert_refused_before_sending(err.value, model_server, "BudgetExceeded", "run budget")


async def test_over_budget_routes_cheaper_when_configured(routed: Any, model_server: Any) -> None:
    # The strong tier is required (min_tier) but only the cheap one fits the run's budget.
    async with routed(catalogue(model_server, over_budget="route_cheaper")) as h:
        result, _ = await route(h, CHEAP_CONFIDENT, min_tier="strong", budget={"run_usd": 0.001})
    assert result.usage.tier == "cheap"
    outcomes = [(c.tier, c.outcome) for c in result.usage.calls]
    assert outcomes[:2] == [("strong", "over_budget"), ("strong", "over_budget")]
    assert outcomes[-1] == ("cheap", "ok")


async def test_accounting_is_exact_across_retries_and_replay(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    # Attempt 1: cheap answers garbage twice (the answer and its repair turn, both charged),
    # both strong endpoints 503 (free): the attempt fails and Temporal retries. Attempt 2: cheap
    # answers well (charged).
    model_server.script(Fault.malformed(), Fault.malformed(), match="baton-rules-small")
    model_server.script(Fault.status(503), Fault.status(502), match="baton-rules-large")
    async with routed(catalogue(model_server)) as h:
        result, wid = await route(h, CHEAP_CONFIDENT)
        charges = spend.charges_of(h.db, wid)
        assert [(c.attempt, c.tier, c.outcome) for c in charges] == [
            (1, "cheap", "invalid_output"),
            (1, "cheap", "invalid_output"),
            (2, "cheap", "ok"),
        ]
        assert model_server.attempts("triage_classifier") == 5  # every request reached it
        assert result.usage.run_cost_usd == pytest.approx(sum(c.cost_usd for c in charges))
        assert result.usage.run_tokens == sum(
            c.prompt_tokens + c.completion_tokens for c in charges
        )
        # Replaying the history runs no activity: nothing is charged again.
        history = await h.temporal.get_workflow_handle(wid).fetch_history()
        await Replayer(workflows=[RouteOnce], plugins=[BatonPlugin()]).replay_workflow(history)
        assert len(spend.charges_of(h.db, wid)) == 3


async def test_residency_deny_reroutes_to_an_allowed_region(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    base = model_server.base_url
    spec = catalogue(
        model_server,
        model(
            "baton-rules-large", f"{base}/us/v1", "strong", region="us", price_per_1k_input=0.001
        ),
        model("baton-rules-large", f"{base}/eu/v1", "strong", region="eu"),
    )
    async with routed(spec) as h:  # tenant acme allows eu only (policy/data/tenants.json)
        result, wid = await route(h, AMBIGUOUS)
    usage = result.usage
    assert [(c.region, c.outcome) for c in usage.calls] == [
        ("us", "residency_denied"),
        ("eu", "ok"),
    ]
    assert usage.region == "eu"
    assert all("/us/" not in r["path"] for r in model_server.requests)  # nothing left the EU


async def test_residency_deny_without_an_allowed_endpoint_fails(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    base = model_server.base_url
    spec = catalogue(
        model_server, model("baton-rules-large", f"{base}/us/v1", "strong", region="us")
    )
    async with routed(spec) as h:
        with pytest.raises(WorkflowFailureError) as err:
            await route(h, AMBIGUOUS)
    assert_refused_before_sending(err.value, model_server, "PolicyDenied", "data residency")


async def test_a_spent_tenant_day_refuses_before_sending(routed: Any, model_server: Any) -> None:
    from datetime import UTC, datetime

    async with routed(catalogue(model_server)) as h:
        cap = h.runtime.router.caps[h.tenant]  # policy/data/tenants.json daily_spend_cap_usd
        with h.db.session() as session:  # earlier calls today used the whole cap
            spend.charge_in(
                session,
                spend.ModelCharge(
                    tenant=h.tenant, day=spend.utc_day(datetime.now(UTC)), workflow_id="earlier",
                    run_id="r", activity_id="1", attempt=1, call_index=0, agent="x",
                    task_class="triage", model="m", endpoint="e", tier="cheap", outcome="ok",
                    cost_usd=cap,
                ),
            )  # fmt: skip
        with pytest.raises(WorkflowFailureError) as err:
            await route(h, AMBIGUOUS)
    assert_refused_before_sending(err.value, model_server, "BudgetExceeded", "tenant daily cap")


def test_a_bad_catalogue_stops_the_worker_at_start(tmp_path: Path, model_server: Any) -> None:
    from worker import build_runtime

    spec = catalogue(model_server)
    spec["models"][0]["price_per_1k_output"] = "cheap"
    (tmp_path / "models.json").write_text(json.dumps(spec))
    settings = make_settings(
        f"sqlite:///{tmp_path / 'b.db'}", model_server, model_catalogue=tmp_path / "models.json"
    )
    with pytest.raises(CatalogueError, match=r"models\.0\.price_per_1k_output"):
        build_runtime(settings)


async def test_finance_agents_listed_in_the_catalogue_are_routed(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    spec = catalogue(model_server)
    for m in spec["models"]:
        m["capabilities"] = [*m["capabilities"], "finance"]
    spec["task_classes"]["finance"] = {"capability": "finance"}
    spec["agents"] = {"reconciler": "finance", "compliance_checker": "finance",
                      "close_memo_writer": "finance"}  # fmt: skip
    model_server.script(Fault.status(503), match="/primary/")  # one fallback on the way
    async with routed(spec) as h, h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.approve_close(handle.id)
        result = await handle.result()
    charges = spend.charges_of(h.db, handle.id)
    assert sorted({c.agent for c in charges}) == [
        "close_memo_writer", "compliance_checker", "reconciler",
    ]  # fmt: skip
    assert all(c.tier == "cheap" and c.model == "baton-rules-small" for c in charges)
    assert all(c.endpoint.endswith("/backup/v1") for c in charges[:1])  # the 503 fell back
    assert result.cost_usd == pytest.approx(sum(c.cost_usd for c in charges))
    assert result.tokens == sum(c.prompt_tokens + c.completion_tokens for c in charges)
    with h.db.read_session() as s:  # charged once: not also in agent_spend
        from sqlmodel import select

        assert s.exec(select(spend.AgentSpend)).all() == []


async def test_a_process_version_that_names_a_model_pins_the_router(
    routed: Any, model_server: ScriptedModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = catalogue(model_server)
    for m in spec["models"]:
        m["capabilities"] = [*m["capabilities"], "finance"]
    spec["task_classes"]["finance"] = {"capability": "finance"}
    spec["agents"] = {"reconciler": "finance", "compliance_checker": "finance"}

    def pin(model: str) -> None:  # the worker's "stable" finance close names the reconciler's model
        version = ProcessVersion(name=STABLE_VERSION, description="t", models={"reconciler": model})
        monkeypatch.setitem(PROCESS_VERSIONS["finance_close"], STABLE_VERSION, version)

    pin("baton-rules-large")
    async with routed(spec) as h, h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        charges = {c.agent: c for c in spend.charges_of(h.db, handle.id)}
        assert (charges["reconciler"].model, charges["reconciler"].tier) == (
            "baton-rules-large", "strong",
        )  # fmt: skip
        assert charges["compliance_checker"].model == "baton-rules-small"  # not pinned: cheapest
        await h.client.cancel(handle.id)

        pin("gpt-not-in-the-catalogue")
        november = f"{h.period[:4]}-11"
        seed_period(h.db, h.tenant, november)
        handle = await h.client.start_finance_close(h.start_input(period=november))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause: BaseException | None = failed.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause if isinstance(cause, ActivityError) else cause.__cause__
    assert isinstance(cause, ApplicationError) and cause.type == "NoEligibleModel"
    assert "pins model 'gpt-not-in-the-catalogue'" in str(cause)
    assert not [r for r in model_server.requests if november in r["raw"]]  # nothing was sent
