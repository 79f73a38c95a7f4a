"""Cost-aware model routing: the catalogue, tiers, escalation, fallback, budgets and charges.

An agent asks for a task class (``triage``, ``research`` ...), never for a model. The router:

1. tries the task class's tier-0 rules (activities/tier0.py): free, no model call; accepted at
   or above the class's ``min_confidence``;
2. tries the catalogue's models for the class's capability, cheap tier first, then strong.
   Within a tier, a provider error (5xx, timeout, connection) falls back to the next endpoint of
   the tier; an answer that fails the schema or its answer check (activities/answer_checks.py)
   gets one repair turn on the same model (the problems fed back), then escalates to the next
   tier, as does one below ``min_confidence``; when no tier is left a refused answer fails the
   step, non-retryable; ``min_tier`` (set by the workflow from a policy obligation) skips tiers.
   Each request is asked the way its catalogue entry says (``structured_output``, ``max_tokens``,
   ``timeout_s``, ``seed``/``temperature``, ``schema_pattern``: activities/structured.py), at
   most ``max_concurrency`` at once per endpoint and model from this worker;
3. asks the base policy before every request (activities/agents.py ``_govern``: residency, PII,
   the tenant's daily cap). A residency deny names the allowed regions: the router reroutes to
   an endpoint there, and only there;
4. knows the remaining budget before every request (the run's cap from the input, the tenant's
   daily cap from policy data, both minus what the database says was charged). A request whose
   estimate does not fit is refused (``BudgetExceeded``, non-retryable: the workflow asks a
   human) or, with ``over_budget: route_cheaper``, routed to the best model that fits;
5. charges every request that got an answer (spend.ModelCharge keyed by workflow id, run id,
   activity id, attempt and call index) with an audit row per request (model, tokens, cost; a
   refused answer's row says why in its ``note``), and returns the chosen model, so it lands in
   the workflow history.

Must not: be imported by workflows; read the environment (worker.py passes the catalogue).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import spend, tracing
from activities.agents import (
    _GOVERNED,
    NOT_SENT,
    AgentActivities,
    AnswerCheck,
    CallTarget,
    GovernedCall,
    Refusal,
    Route,
    TokenUsage,
    _heartbeating,
    _map_status_error,
    chat_request,
    judge,
)
from activities.audit import activity_event
from activities.kill_switch import Subject
from activities.structured import (
    STRUCTURED_OUTPUT_MODES,
    RequestOptions,
    StructuredOutput,
    answer_text,
    wire_schema,
)
from activities.tier0 import TIER0_RULES
from workflows.contracts import STABLE_VERSION, AuditEvent, digest
from workflows.contracts.support import (
    BUDGET_EXCEEDED,
    NO_ELIGIBLE_MODEL,
    TIER_ORDER,
    Budget,
    ModelCall,
    RoutedUsage,
)
from workflows.presets import PRESETS

T = TypeVar("T", bound=BaseModel)

#: Completion tokens assumed when estimating a request before it is sent.
ESTIMATED_COMPLETION_TOKENS = 400


# ---------------------------------------------------------------------------------------------
# The catalogue (config/models.json)
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model at one endpoint."""

    name: str = Field(min_length=1, description="Model name sent to the endpoint.")
    endpoint: str = Field(
        description="OpenAI-compatible base URL, e.g. https://host/v1. May start with "
        "{openai_base_url} or {openai_origin} (the worker's OPENAI_BASE_URL, or its "
        "scheme://host:port), e.g. {openai_origin}/backup/v1."
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding this endpoint's API key (read by worker.py); "
        "unset: the worker's OPENAI_API_KEY.",
    )
    tier: Literal["cheap", "strong"]
    price_per_1k_input: float = Field(ge=0, description="USD per 1000 prompt tokens.")
    price_per_1k_output: float = Field(ge=0, description="USD per 1000 completion tokens.")
    context_window: int = Field(gt=0, description="Tokens the model accepts.")
    region: str = Field(min_length=1)
    capabilities: list[str] = Field(min_length=1)
    # -- how the model's server is asked (activities/structured.py); defaults suit OpenAI -----
    structured_output: StructuredOutput = Field(
        default="json_schema",
        description="How to ask for JSON: json_schema (OpenAI/Azure strict response_format), "
        "json_object_schema (llama-cpp-python: json_object with a schema), tool_call (a forced "
        "function call carrying the schema) or prompt (schema in the prompt, reply parsed).",
    )
    tool_calling: Literal["native", "structured"] = Field(
        default="native",
        description="How an agent that acts asks for tool calls: native (the chat API's "
        "tools/tool_calls) or structured (no native tool calling: the model answers a JSON "
        "document naming the calls, asked the way structured_output says).",
    )
    max_tokens: int = Field(default=2048, gt=0, description="Completion tokens; always sent.")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Per-request client timeout, in seconds; below the agent activities' "
        "start-to-close timeout. Unset: the worker's BATON_LLM_TIMEOUT_SECONDS (60 s).",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests this worker sends to this model at this endpoint at once; more "
        "wait. Unset: no limit.",
    )
    accepts_seed: bool = Field(default=True, description="Whether ``seed`` is sent.")
    accepts_temperature: bool = Field(default=True, description="Whether ``temperature`` is sent.")
    seed: int = Field(default=7, description="Sent when accepts_seed.")
    temperature: float = Field(
        default=0.0, ge=0, le=2, description="Sent when accepts_temperature."
    )
    schema_pattern: bool = Field(
        default=True,
        description="Whether the server takes a JSON-schema ``pattern`` (llama-cpp-python "
        "0.3.36 crashes on a decimal regex: false there, and no pattern is sent).",
    )

    @field_validator("timeout_s")
    @classmethod
    def _below_start_to_close(cls, value: float | None) -> float | None:
        limit = PRESETS["agent"].start_to_close.total_seconds()
        if value is not None and value >= limit:
            raise ValueError(
                f"must be below the agent activities' start-to-close timeout ({limit:g} s, "
                f"workflows/presets.py), got {value:g}"
            )
        return value

    @field_validator("structured_output", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if value not in STRUCTURED_OUTPUT_MODES:
            raise ValueError(f"expected one of {'|'.join(STRUCTURED_OUTPUT_MODES)}, got {value!r}")
        return value

    def options(self, default_timeout_s: float) -> RequestOptions:
        """How requests to this model are made; ``default_timeout_s`` when the entry sets no
        ``timeout_s`` (the worker's BATON_LLM_TIMEOUT_SECONDS)."""
        return RequestOptions(
            structured_output=self.structured_output,
            max_tokens=self.max_tokens,
            timeout_s=self.timeout_s if self.timeout_s is not None else default_timeout_s,
            accepts_seed=self.accepts_seed,
            accepts_temperature=self.accepts_temperature,
            schema_pattern=self.schema_pattern,
            seed=self.seed,
            temperature=self.temperature,
        )

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// base URL, got {value!r}")
        return value.rstrip("/")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            prompt_tokens / 1000 * self.price_per_1k_input
            + completion_tokens / 1000 * self.price_per_1k_output,
            8,
        )

    @property
    def label(self) -> str:
        return f"{self.name}@{self.endpoint}"


class TaskClass(_Strict):
    capability: str = Field(min_length=1)
    min_confidence: float = Field(default=0.0, ge=0, le=1)
    tier0: str | None = Field(default=None, description="Tier-0 rule set (activities/tier0.py).")

    @field_validator("tier0")
    @classmethod
    def _known_rules(cls, value: str | None) -> str | None:
        if value is not None and value not in TIER0_RULES:
            raise ValueError(f"unknown tier-0 rule set {value!r}; known: {sorted(TIER0_RULES)}")
        return value


class Catalogue(_Strict):
    """The model catalogue and the task classes agents may ask for."""

    over_budget: Literal["refuse", "route_cheaper"] = "refuse"
    models: list[ModelSpec] = Field(min_length=1)
    task_classes: dict[str, TaskClass] = Field(min_length=1)
    #: Agent role -> task class, for agents written before the router (the finance, HR and
    #: customer agents of activities/agents.py): listed ones are routed too, the others keep
    #: the worker's configured model (BATON_MODEL).
    agents: dict[str, str] = {}

    @model_validator(mode="after")
    def _every_class_served(self) -> Catalogue:
        seen: set[tuple[str, str]] = set()
        for m in self.models:
            if (m.name, m.endpoint) in seen:
                raise ValueError(f"model {m.name!r} at {m.endpoint} is listed twice")
            seen.add((m.name, m.endpoint))
        for role, task_class in self.agents.items():
            if task_class not in self.task_classes:
                raise ValueError(
                    f"agents.{role}: unknown task class {task_class!r}; the catalogue has "
                    f"{sorted(self.task_classes)}"
                )
        for name, tc in self.task_classes.items():
            if not any(tc.capability in m.capabilities for m in self.models):
                raise ValueError(f"task_classes.{name}: no model has capability {tc.capability!r}")
        return self

    def spec_of(self, model: str) -> ModelSpec | None:
        """The first entry of ``model`` (an unrouted call naming a model: the auction's tiers)."""
        return next((m for m in self.models if m.name == model), None)

    def candidates(self, task_class: str) -> list[ModelSpec]:
        """Models for the class, cheapest tier first, then by price, then as listed."""
        tc = self.task_classes[task_class]
        capable = [m for m in self.models if tc.capability in m.capabilities]
        return sorted(
            capable,
            key=lambda m: (TIER_ORDER.index(m.tier), m.price_per_1k_input + m.price_per_1k_output),
        )


class CatalogueError(ValueError):
    """The catalogue file is missing or invalid; the message names the field."""


def load_catalogue(path: str | Path, openai_base_url: str | None = None) -> Catalogue:
    """Read and validate a catalogue file. Errors name the file, the field and the expectation.

    ``openai_base_url`` (the worker's OPENAI_BASE_URL) fills the endpoints' placeholders."""
    source = Path(path)
    try:
        raw = json.loads(source.read_text())
    except FileNotFoundError:
        raise CatalogueError(f"model catalogue {source} does not exist") from None
    except json.JSONDecodeError as err:
        raise CatalogueError(f"model catalogue {source} is not valid JSON: {err}") from None
    return parse_catalogue(raw, str(source), openai_base_url)


#: Placeholders an endpoint may start with, filled from the worker's OPENAI_BASE_URL.
PLACEHOLDERS = ("{openai_base_url}", "{openai_origin}")


def _fill_endpoints(raw: Any, source: str, openai_base_url: str | None) -> Any:
    """``raw`` with every model's endpoint placeholder replaced (a copy; ``raw`` is untouched)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        return raw  # validation names the problem
    models = []
    for i, m in enumerate(raw["models"]):
        endpoint = m.get("endpoint") if isinstance(m, dict) else None
        if isinstance(endpoint, str) and "{" in endpoint:
            where = f"{source} is invalid: models.{i}.endpoint"
            head = endpoint.split("}", 1)[0] + "}"
            if head not in PLACEHOLDERS:
                raise CatalogueError(
                    f"{where}: unknown placeholder in {endpoint!r}; an endpoint may start with "
                    f"{' or '.join(PLACEHOLDERS)}"
                )
            if openai_base_url is None:
                raise CatalogueError(f"{where}: {head} needs the worker's OPENAI_BASE_URL")
            scheme, _, rest = openai_base_url.partition("://")
            values = {
                "{openai_base_url}": openai_base_url.rstrip("/"),
                "{openai_origin}": f"{scheme}://{rest.split('/', 1)[0]}",
            }
            m = {**m, "endpoint": values[head] + endpoint[len(head) :]}
        models.append(m)
    return {**raw, "models": models}


def parse_catalogue(
    raw: Any, source: str = "model catalogue", openai_base_url: str | None = None
) -> Catalogue:
    raw = _fill_endpoints(raw, source, openai_base_url)
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise CatalogueError(f"{source} is invalid: {problems}") from None


def tenant_caps(policy_dir: str | Path) -> dict[str, float]:
    """Each tenant's daily model spend cap (USD) from the policy data the base policy enforces
    (policy/data/tenants.json), so the router knows the remaining budget before a call."""
    path = Path(policy_dir) / "data" / "tenants.json"
    try:
        tenants = json.loads(path.read_text())["baton"]["tenants"]
    except (OSError, KeyError, json.JSONDecodeError, TypeError):
        return {}
    caps: dict[str, float] = {}
    for name, spec in tenants.items():
        cap = spec.get("daily_spend_cap_usd") if isinstance(spec, dict) else None
        if isinstance(cap, int | float) and not isinstance(cap, bool):
            caps[name] = float(cap)
    return caps


# ---------------------------------------------------------------------------------------------
# The router
# ---------------------------------------------------------------------------------------------


@dataclass
class _Attempt:
    """What the router did within one activity attempt."""

    task_class: str = ""
    calls: list[ModelCall] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    waiting: float = 0.0  # seconds spent waiting on models (not router overhead)
    #: The policy gate's result for the request whose answer is returned (for the agent's row).
    governed: GovernedCall | None = None


@dataclass(frozen=True)
class Routed:
    """What :meth:`Router.exchange` got: the response, the model that answered, the attempt."""

    response: Any
    spec: ModelSpec
    state: _Attempt


@dataclass(frozen=True)
class Answer:
    """A routed answer: the parsed output and what routing it cost."""

    output: Any
    usage: RoutedUsage


class Router:
    """Routes agent calls over the catalogue. Built once in worker.py."""

    def __init__(
        self,
        agents: AgentActivities,
        catalogue: Catalogue,
        *,
        caps: dict[str, float] | None = None,
        api_key: str = "local",
        api_keys: dict[str, str] | None = None,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.agents = agents
        self.catalogue = catalogue
        self.caps = caps or {}
        self.api_key = api_key
        #: ``api_key_env`` name -> key, for models with their own key (worker.py reads them).
        self.api_keys = api_keys or {}
        named = {m.api_key_env for m in catalogue.models if m.api_key_env}
        missing = sorted(named - set(self.api_keys))
        if missing:
            raise CatalogueError(
                f"the model catalogue names API keys in {', '.join(missing)}, which are not set"
            )
        #: The request timeout of catalogue entries that set no ``timeout_s``.
        self.timeout_seconds = timeout_seconds
        self._clients: dict[tuple[str, str], AsyncOpenAI] = {}

    def client(self, spec: ModelSpec) -> AsyncOpenAI:
        key = self.api_keys[spec.api_key_env] if spec.api_key_env else self.api_key
        if (spec.endpoint, key) not in self._clients:
            # max_retries=0: Temporal owns retries; fallback between endpoints is the router's.
            self._clients[spec.endpoint, key] = AsyncOpenAI(
                base_url=spec.endpoint, api_key=key, max_retries=0
            )
        return self._clients[spec.endpoint, key]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    async def ask(
        self,
        agent: str,
        task_class: str,
        prompt: str,
        payload: BaseModel,
        wire: type[T],
        confidence: Callable[[T], float] | None = None,
        route: Route | None = None,
        *,
        check: AnswerCheck | None = None,
        schema_wire: type[BaseModel] | None = None,
    ) -> tuple[T, RoutedUsage]:
        """The answer of the cheapest adequate model (or tier-0 rules) to ``payload`` (a
        RoutedAgentInput, or any agent input with a ``tenant``: no run budget, no min tier).

        ``route``: the process version's prompt variant, for the audit trail; when it pins the
        agent's model (workflows/contracts/base.py PROCESS_VERSIONS ``models``), only the
        catalogue's entries of that model are asked (fallback between their endpoints,
        residency, budgets and charges still apply).

        ``check`` (activities/answer_checks.py) judges a schema-valid answer's content;
        ``schema_wire``: the model whose schema is sent, when narrower than ``wire`` (enums
        read at call time). A refused answer (schema or check) gets one repair turn on the same
        model (the problems fed back), then the next tier; when none is left, the step fails
        with a non-retryable ``AgentOutputInvalid`` / ``AgentAnswerIncomplete``.

        The policy gate's result for the answering request is left in the activity's context
        (activities/agents.py ``_GOVERNED``, marked charged) for the agent's own audit row."""
        _GOVERNED.set(None)
        model = route.model if route is not None and route.pinned else None
        tc = self._task_class(agent, task_class)
        state = _Attempt(task_class=task_class)
        tier0 = TIER0_RULES[tc.tier0] if tc.tier0 else None
        min_tier = _min_tier(payload)
        tenant = _tenant(payload)
        if tier0 is not None and min_tier == "tier0":
            found = tier0(payload.model_dump(mode="json"))
            if found is not None and found.confidence >= tc.min_confidence:
                out = wire.model_validate(found.output)
                usage = await self._finish(agent, task_class, state, "tier0", None, out, payload)
                return out, usage

        if self.agents.switch is not None:
            subject = Subject(process=_process(), agent=agent, tenant=tenant)
            await asyncio.to_thread(self.agents.switch.raise_if_blocking, subject)

        content = payload.model_dump_json(exclude=NOT_SENT)
        over_budget = _budget(payload).over_budget or self.catalogue.over_budget
        floor = TIER_ORDER.index(min_tier)
        everything = self.catalogue.candidates(task_class)
        if model is not None:
            everything = [m for m in everything if m.name == model]
            if not everything:
                raise ApplicationError(
                    f"{agent}: the process version pins model {model!r}, which the catalogue "
                    f"does not list for task class {task_class!r}",
                    type=NO_ELIGIBLE_MODEL,
                    non_retryable=True,
                )
        fits = [m for m in everything if TIER_ORDER.index(m.tier) >= floor]
        allowed_regions: set[str] | None = None
        best: tuple[T, ModelSpec, GovernedCall] | None = None
        failure: ApplicationError | None = None
        over_budget_hit = False

        for tier in sorted({m.tier for m in fits}, key=TIER_ORDER.index):
            over_here = False
            for spec in [m for m in fits if m.tier == tier]:
                if allowed_regions is not None and spec.region not in allowed_regions:
                    continue
                if math.ceil((len(prompt) + len(content)) / 4) > spec.context_window:
                    continue
                estimate = _estimate(spec, prompt, content)
                remaining = await self._remaining(payload)
                if remaining is not None and estimate > remaining[0]:
                    note = f"needs about {estimate} USD; {remaining[1]}"
                    self._note(state, spec, "over_budget", note)
                    over_here = True
                    continue
                try:
                    out = await self._request(
                        agent, tc.min_confidence, prompt, content, payload, spec,
                        _Answer(wire, check, schema_wire), confidence, state, estimate, route,
                    )  # fmt: skip
                except _Fallback as why:  # provider error or residency: next endpoint
                    if why.reroute is None or failure is None:  # a provider error says more
                        failure = why.error
                    if why.reroute is not None:
                        allowed_regions = why.reroute
                    continue
                except _Escalate as why:  # invalid or unsure answer: next tier
                    failure = why.error
                    if why.answer is not None and why.governed is not None:
                        best = (why.answer, spec, why.governed)
                    break
                usage = await self._finish(agent, task_class, state, tier, spec, out, payload)
                return out, usage
            if over_here:
                over_budget_hit = True
                if over_budget == "refuse":
                    await self._charge_audit(agent, task_class, state, payload)
                    raise self._budget_error(agent, payload, state.calls[-1])
                break  # route_cheaper: no stronger tier fits either

        if best is not None:  # nothing better answered above: the best answer we got
            out, spec, state.governed = best
            usage = await self._finish(agent, task_class, state, spec.tier, spec, out, payload)
            return out, usage
        if over_budget_hit:  # route_cheaper: the strongest model below min_tier that fits
            for spec in reversed([m for m in everything if m not in fits]):
                if allowed_regions is not None and spec.region not in allowed_regions:
                    continue
                estimate = _estimate(spec, prompt, content)
                remaining = await self._remaining(payload)
                if remaining is not None and estimate > remaining[0]:
                    continue
                try:
                    out = await self._request(
                        agent, 0.0, prompt, content, payload, spec,
                        _Answer(wire, check, schema_wire), None, state, estimate, route,
                    )  # fmt: skip
                except (_Fallback, _Escalate) as why:
                    failure = why.error
                    continue
                usage = await self._finish(agent, task_class, state, spec.tier, spec, out, payload)
                return out, usage
            await self._charge_audit(agent, task_class, state, payload)
            raise self._budget_error(agent, payload, state.calls[-1])
        regions = sorted(allowed_regions or []) or "any"
        raise await self._unanswered(
            agent, task_class, state, payload, failure,
            f"can serve task class {task_class!r} for tenant {tenant!r} "
            f"(regions allowed: {regions})",
        )  # fmt: skip

    # -- a request the caller makes (a turn of an agent that acts) ---------------------------

    async def exchange(
        self,
        agent: str,
        task_class: str,
        prompt: str,
        content: str,
        payload: BaseModel,
        send: Callable[[ModelSpec], Awaitable[Any]],
    ) -> Routed:
        """One request of ``agent`` that the caller builds (``send(spec)`` makes it: a turn of
        an agent that acts, activities/agent_turn.py), routed like :meth:`ask`: the kill
        switch, the cheapest model of ``task_class`` at or above the payload's ``min_tier``,
        the run's and the tenant's budget before the request (``BudgetExceeded`` when it does
        not fit), the base policy on it, fallback to the next endpoint on 5xx and timeouts,
        and the answered request charged with its audit row. ``content`` is what the request
        carries besides ``prompt`` (for the estimate). Finish with :meth:`settle`."""
        self._task_class(agent, task_class)
        if self.agents.switch is not None:
            subject = Subject(process=_process(), agent=agent, tenant=_tenant(payload))
            await asyncio.to_thread(self.agents.switch.raise_if_blocking, subject)
        state = _Attempt(task_class=task_class)
        floor = TIER_ORDER.index(_min_tier(payload))
        failure: ApplicationError | None = None
        for spec in self.catalogue.candidates(task_class):
            if TIER_ORDER.index(spec.tier) < floor:
                continue
            estimate = _estimate(spec, prompt, content)
            remaining = await self._remaining(payload)
            if remaining is not None and estimate > remaining[0]:
                self._note(
                    state, spec, "over_budget", f"needs about {estimate} USD; {remaining[1]}"
                )
                await self._charge_audit(agent, task_class, state, payload)
                raise self._budget_error(agent, payload, state.calls[-1])
            version = str(getattr(payload, "version", STABLE_VERSION))
            chosen = Route(version, STABLE_VERSION, prompt, spec.name)
            target = CallTarget(spec.endpoint, spec.region, estimate, len(state.calls))
            await self.agents._govern(agent, prompt, payload, chosen, target)
            began = time.perf_counter()
            try:
                response = await _heartbeating(send(spec))
            except openai.APIStatusError as err:
                state.waiting += time.perf_counter() - began
                mapped = _map_status_error(agent, err)
                if err.status_code >= 500:
                    self._note(state, spec, "server_error", str(mapped))
                    failure = mapped
                    continue
                raise mapped from err
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                state.waiting += time.perf_counter() - began
                self._note(state, spec, "server_error", f"unreachable or timed out: {err}")
                failure = ApplicationError(
                    f"{agent}: model endpoint {spec.endpoint} unreachable or timed out: {err}",
                    type="LLMUnavailable",
                )
                continue
            state.waiting += time.perf_counter() - began
            state.calls.append(_answered(spec, response.usage))
            await self._charge_one(agent, state, payload, len(state.calls) - 1)
            return Routed(response, spec, state)
        raise await self._unanswered(
            agent, task_class, state, payload, failure,
            f"serves task class {task_class!r} at or above tier {_min_tier(payload)!r}",
        )  # fmt: skip

    async def settle(
        self,
        agent: str,
        routed: Routed,
        out: BaseModel,
        payload: BaseModel,
        *,
        also: Callable[[Session], None] | None = None,
    ) -> RoutedUsage:
        """Audit what :meth:`exchange` routed (``model.routed`` with ``out``'s digest) and the
        run's charged totals. ``also(session)`` writes in the audit row's transaction (an
        agent turn stores its assistant message there: one commit, not two)."""
        state = routed.state
        return await self._finish(
            agent, state.task_class, state, routed.spec.tier, routed.spec, out, payload, also=also
        )

    # -- one request ------------------------------------------------------------------------

    async def _request(
        self,
        agent: str,
        min_confidence: float,
        prompt: str,
        content: str,
        payload: BaseModel,
        spec: ModelSpec,
        asked: _Answer,
        confidence: Callable[[Any], float] | None,
        state: _Attempt,
        estimate: float,
        route: Route | None = None,
    ) -> Any:
        index = len(state.calls)
        if route is None:
            version = str(getattr(payload, "version", STABLE_VERSION))
            route = Route(version, STABLE_VERSION, prompt, spec.name)
        chosen = replace(route, model=spec.name)
        target = CallTarget(spec.endpoint, spec.region, estimate, index)
        try:
            governed = await self.agents._govern(agent, prompt, payload, chosen, target)
        except ApplicationError as err:
            details = err.details[0] if err.details else {}
            reroute = details.get("reroute_regions") if isinstance(details, dict) else None
            if err.type == "PolicyDenied" and reroute:
                self._note(state, spec, "residency_denied", str(err))
                raise _Fallback(err, reroute=set(reroute)) from err
            raise
        schema = wire_schema(asked.schema_wire or asked.wire, pattern=spec.schema_pattern)
        repair: tuple[str, str] | None = None
        refusal: Refusal | None = None
        # The first answer, and one repair turn (the same model, the problems fed back) if it
        # is refused; the repair rides on the policy decision of the request it repairs.
        for _turn in (1, 2):
            response, waited, call = await self._exchange(
                agent, spec, state, self._send(agent, spec, governed, prompt, schema, repair)
            )
            governed = replace(governed, throttled_seconds=round(waited, 3), charged=True)
            text = answer_text(response, spec.structured_output)
            out, refusal = judge(text, asked.wire, spec.structured_output, asked.check)
            if refusal is not None:
                why = refusal.note + (" [repair turn]" if repair is not None else "")
                update = {"outcome": "invalid_output", "note": why[:1000]}
                state.calls.append(call.model_copy(update=update))
                await self._charge_one(agent, state, payload, len(state.calls) - 1)
                repair = (text, refusal.text)
                continue
            score = confidence(out) if confidence is not None else 1.0
            if score < min_confidence:
                note = f"confidence {score:.2f} < {min_confidence:.2f}"
                update = {"outcome": "low_confidence", "note": note}
                state.calls.append(call.model_copy(update=update))
                await self._charge_one(agent, state, payload, len(state.calls) - 1)
                unsure = ApplicationError(f"{agent}: {note}", type="LowConfidence")
                raise _Escalate(unsure, out, governed)
            state.calls.append(call)
            await self._charge_one(agent, state, payload, len(state.calls) - 1)
            state.governed = governed
            return out
        assert refusal is not None
        raise _Escalate(refusal.error(agent), None)

    async def _exchange(
        self, agent: str, spec: ModelSpec, state: _Attempt, sent: Awaitable[tuple[Any, float]]
    ) -> tuple[Any, float, ModelCall]:
        """One request (``sent``: :meth:`_send` to ``spec``) and its answer (the response,
        seconds waited for a slot, the call as charged); a provider error becomes a fallback to
        the next endpoint (5xx, timeouts) or the mapped error (other 4xx)."""
        began = time.perf_counter()
        try:
            response, waited = await sent
        except openai.APIStatusError as err:
            state.waiting += time.perf_counter() - began
            mapped = _map_status_error(agent, err)
            if err.status_code >= 500:
                self._note(state, spec, "server_error", str(mapped))
                raise _Fallback(mapped) from err
            raise mapped from err
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            state.waiting += time.perf_counter() - began
            self._note(state, spec, "server_error", f"unreachable or timed out: {err}")
            raise _Fallback(
                ApplicationError(
                    f"{agent}: model endpoint {spec.endpoint} unreachable or timed out: {err}",
                    type="LLMUnavailable",
                )
            ) from err
        state.waiting += time.perf_counter() - began
        return response, waited, _answered(spec, response.usage)

    async def _unanswered(
        self,
        agent: str,
        task_class: str,
        state: _Attempt,
        payload: BaseModel,
        failure: ApplicationError | None,
        no_model: str,
    ) -> ApplicationError:
        """When no candidate answered: audit the requests made, and the error to raise: the
        last request's ``failure``, or, when there was none, that no model in the catalogue
        ``no_model`` (what the call needed)."""
        await self._charge_audit(agent, task_class, state, payload)
        if failure is not None:
            return failure
        return ApplicationError(
            f"{agent}: no model in the catalogue {no_model}",
            type=NO_ELIGIBLE_MODEL,
            non_retryable=True,
        )

    def _task_class(self, agent: str, task_class: str) -> TaskClass:
        """The catalogue's ``task_class``; a non-retryable error naming the known ones when
        there is no such class (no model can be eligible)."""
        if task_class not in self.catalogue.task_classes:
            raise ApplicationError(
                f"{agent}: unknown task class {task_class!r}; the catalogue has "
                f"{sorted(self.catalogue.task_classes)}",
                type=NO_ELIGIBLE_MODEL,
                non_retryable=True,
            )
        return self.catalogue.task_classes[task_class]

    async def _send(
        self,
        agent: str,
        spec: ModelSpec,
        governed: GovernedCall,
        prompt: str,
        schema: dict[str, Any],
        repair: tuple[str, str] | None = None,
    ) -> tuple[Any, float]:
        """One HTTP request in a GenAI ``chat <model>`` span (activities/tracing.py), inside the
        throttle's slots (activities/throttle.py) and the endpoint's ``max_concurrency`` if
        any: the response, and the seconds the request waited for a slot."""
        with tracing.agent_call_span(
            agent, spec.name, spec.endpoint, tenant=governed.tenant, tier=spec.tier
        ) as span:
            request = chat_request(
                self.client(spec), spec.name, agent, prompt, governed.content, schema,
                spec.options(self.timeout_seconds), repair,
            )  # fmt: skip
            throttle = self.agents.throttle
            slots = self.agents.slots
            waited = 0.0
            async with slots.slot(spec.endpoint, spec.name, spec.max_concurrency) as queued:
                if throttle is None:
                    response = await _heartbeating(request)
                else:
                    keys = [f"agent:{agent}", f"model:{spec.name}", f"tenant:{governed.tenant}"]
                    async with throttle.slot(keys) as waited:  # excess calls wait, never fail
                        response = await _heartbeating(request)
            waited += queued
            if response.usage is not None:
                prompt_tokens = response.usage.prompt_tokens
                completion_tokens = response.usage.completion_tokens
                usage = TokenUsage(
                    model=spec.name,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=spec.cost(prompt_tokens, completion_tokens),
                )
                tracing.record_usage(span, usage)
            return response, waited

    # -- budgets ----------------------------------------------------------------------------

    async def _remaining(self, payload: BaseModel) -> tuple[float, str] | None:
        """The smaller of the run's and the tenant's remaining budget (USD), with a note."""
        info = activity.info()
        budget = _budget(payload)
        tenant = _tenant(payload)
        cap = self.caps.get(tenant)
        if budget.run_usd is None and cap is None:
            return None
        db = self.agents.ledger.db

        def read() -> list[tuple[float, str]]:  # both reads in one worker-thread hop
            limits: list[tuple[float, str]] = []
            if budget.run_usd is not None:
                _, run_cost = spend.run_totals(
                    db, info.workflow_id or "", info.workflow_run_id or ""
                )
                left = round(budget.run_usd - run_cost, 8)
                limits.append((left, f"run budget {budget.run_usd} USD, {run_cost} spent"))
            if cap is not None:
                spent = spend.spent_on(db, tenant, spend.utc_day(datetime.now(UTC)))
                limits.append((round(cap - spent, 8), f"tenant daily cap {cap} USD, {spent} spent"))
            return limits

        return min(await asyncio.to_thread(read))

    def _budget_error(self, agent: str, payload: BaseModel, call: ModelCall) -> ApplicationError:
        return ApplicationError(
            f"{agent}: budget exceeded: {call.model} ({call.tier}) {call.note}; the call was "
            "refused and needs a human decision",
            {"model": call.model, "tier": call.tier, "note": call.note, "tenant": _tenant(payload)},
            type=BUDGET_EXCEEDED,
            non_retryable=True,
        )

    # -- accounting -------------------------------------------------------------------------

    def _note(self, state: _Attempt, spec: ModelSpec, outcome: Any, note: str) -> None:
        state.calls.append(
            ModelCall(
                model=spec.name,
                endpoint=spec.endpoint,
                tier=spec.tier,
                region=spec.region,
                outcome=outcome,
                note=note[:300],
            )
        )

    async def _charge_one(
        self, agent: str, state: _Attempt, payload: BaseModel, index: int
    ) -> None:
        """Charge one answered request, with its audit row, in one transaction (idempotent)."""
        info = activity.info()
        call = state.calls[index]
        row = spend.ModelCharge(
            tenant=_tenant(payload),
            day=spend.utc_day(datetime.now(UTC)),
            workflow_id=info.workflow_id or "",
            run_id=info.workflow_run_id or "",
            activity_id=info.activity_id,
            attempt=info.attempt,
            call_index=index,
            agent=agent,
            task_class=state.task_class,
            **call.model_dump(exclude={"region", "note"}),  # the model, outcome, tokens, cost
        )
        event = _request_event(
            agent,
            index,
            call,
            {
                "endpoint": call.endpoint,
                "tier": call.tier,
                "region": call.region,
                "attempt": info.attempt,
                "note": call.note,
                "tenant": _tenant(payload),
            },
            tokens=call.prompt_tokens + call.completion_tokens,
            cost_usd=call.cost_usd,
            input_digest=digest(payload),
        )
        db = self.agents.ledger.db

        def write() -> None:
            with db.session() as session:
                self.agents.ledger.append_in(session, [event])
                spend.charge_in(session, row)

        await asyncio.to_thread(write)

    async def _charge_audit(
        self, agent: str, task_class: str, state: _Attempt, payload: BaseModel
    ) -> None:
        """Audit the requests that were not answered (fallbacks, refusals): they cost nothing."""
        events = [
            _request_event(
                agent,
                i,
                c,
                {"endpoint": c.endpoint, "tier": c.tier, "note": c.note, "task_class": task_class},
            )  # fmt: skip
            for i, c in enumerate(state.calls)
            if c.outcome in ("server_error", "residency_denied", "over_budget")
        ]
        if events:
            await asyncio.to_thread(self.agents.ledger.append, events)

    async def _finish(
        self,
        agent: str,
        task_class: str,
        state: _Attempt,
        tier: Any,
        spec: ModelSpec | None,
        out: BaseModel,
        payload: BaseModel,
        *,
        also: Callable[[Session], None] | None = None,
    ) -> RoutedUsage:
        await self._charge_audit(agent, task_class, state, payload)
        info = activity.info()
        run_tokens, run_cost = await asyncio.to_thread(
            spend.run_totals,
            self.agents.ledger.db,
            info.workflow_id or "",
            info.workflow_run_id or "",
        )
        answered = [c for c in state.calls if c.outcome in ("ok", "low_confidence")]
        last = answered[-1] if spec is not None and answered else None
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in state.calls)
        cost = round(sum(c.cost_usd for c in state.calls), 8)
        overhead = (time.perf_counter() - state.started - state.waiting) * 1000
        usage = RoutedUsage(
            task_class=task_class,
            model=spec.name if spec is not None else "tier0-rules",
            tier=tier,
            endpoint=spec.endpoint if spec is not None else "",
            region=spec.region if spec is not None else "",
            calls=state.calls,
            tokens=tokens,
            cost_usd=cost,
            run_tokens=run_tokens,
            run_cost_usd=run_cost,
            overhead_ms=round(overhead, 3),
        )
        event = activity_event(
            f"route/{info.attempt}/answer",
            actor=f"agent:{agent}",
            action="model.routed",
            detail={
                "task_class": task_class,
                "tier": usage.tier,
                "endpoint": usage.endpoint,
                "requests": len(state.calls),
                "attempt": info.attempt,
                "run_tokens": run_tokens,
                "run_cost_usd": run_cost,
                "overhead_ms": usage.overhead_ms,
                "chosen_by": "tier0 rules" if spec is None else f"{spec.tier} model",
                "last_outcome": last.outcome if last else "tier0",
            },
            model=usage.model,
            tokens=tokens,
            cost_usd=cost,
            input_digest=digest(payload),
            output_digest=digest(out),
        )
        if also is None:
            await asyncio.to_thread(self.agents.ledger.append, [event])
        else:
            ledger = self.agents.ledger

            def write() -> None:
                with ledger.db.session() as session:
                    also(session)
                    ledger.append_in(session, [event])

            await asyncio.to_thread(write)
        # the agent's own audit row (agents.py _audit) names the answering request's decision
        _GOVERNED.set(state.governed if spec is not None else None)
        return usage


@dataclass(frozen=True)
class _Answer:
    """What a routed call asks for: the wire model the answer is parsed into, the answer check,
    and the (narrower) wire model whose schema is sent."""

    wire: type[BaseModel]
    check: AnswerCheck | None = None
    schema_wire: type[BaseModel] | None = None


class _Fallback(Exception):  # noqa: N818 - control flow, never leaves this module
    def __init__(self, error: ApplicationError, reroute: set[str] | None = None) -> None:
        self.error = error
        self.reroute = reroute


class _Escalate(Exception):  # noqa: N818 - control flow, never leaves this module
    def __init__(
        self, error: ApplicationError, answer: Any, governed: GovernedCall | None = None
    ) -> None:
        self.error = error
        self.answer = answer
        self.governed = governed


def _request_event(
    agent: str, index: int, call: ModelCall, detail: dict[str, Any], **fields: Any
) -> AuditEvent:
    """The audit row of the ``index``-th model request of this activity attempt: ``agent``
    asked ``call.model``, with ``call.outcome``; ``fields``: what it cost, when charged."""
    return activity_event(
        f"route/{activity.info().attempt}/{index}",
        actor=f"agent:{agent}",
        action=f"model.{call.outcome}",
        detail=detail,
        model=call.model,
        **fields,
    )


def _answered(spec: ModelSpec, usage: Any) -> ModelCall:
    """The record of a call ``spec`` answered, with its tokens and their cost."""
    prompt_tokens = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    return ModelCall(
        model=spec.name,
        endpoint=spec.endpoint,
        tier=spec.tier,
        region=spec.region,
        outcome="ok",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=spec.cost(prompt_tokens, completion_tokens),
    )


def _tenant(payload: BaseModel) -> str:
    return str(getattr(payload, "tenant", "") or "")


def _budget(payload: BaseModel) -> Budget:
    budget = getattr(payload, "budget", None)
    return budget if isinstance(budget, Budget) else Budget()


def _min_tier(payload: BaseModel) -> str:
    tier = getattr(payload, "min_tier", "tier0")
    return tier if tier in TIER_ORDER else "tier0"


def _estimate(spec: ModelSpec, prompt: str, content: str) -> float:
    """USD a request may cost: the prompt at ~4 characters a token, plus a full answer."""
    tokens = math.ceil((len(prompt) + len(content)) / 4)
    return spec.cost(tokens, ESTIMATED_COMPLETION_TOKENS)


def _process() -> str:
    from workflows.contracts import PROCESS_BY_WORKFLOW_TYPE

    workflow_type = activity.info().workflow_type or ""
    return PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type)


__all__ = [
    "Answer",
    "Catalogue",
    "CatalogueError",
    "ESTIMATED_COMPLETION_TOKENS",
    "ModelSpec",
    "PLACEHOLDERS",
    "Routed",
    "Router",
    "TaskClass",
    "load_catalogue",
    "parse_catalogue",
    "tenant_caps",
]
