"""Real-model benchmark: Baton's agents on the local models (llama.cpp, CPU), per agent and process.

    .venv/bin/python bench/real_model_bench.py [--runs N] [--process NAME ...]

Needs `make install-llm`. Starts a Temporal dev server, the local model server (embeddings only)
and llama.cpp's server with the local models (SmolLM2-135M-Instruct = the catalogue's cheap tier,
Qwen2.5-Coder-0.5B-Instruct = its strong tier, config/models.llama-cpp.json), with a recording
proxy in between (tests/support/recording_proxy.py: seconds and tokens per request). Each
process runs the same small flow as the ``real_model`` tests (tests/support/real_runs.py), whose
verdict is the run's: completed (every item addressed), failed cleanly (compensated, the audit
saying why), WRONG (anything else, e.g. completed with work skipped) or unfinished (still running
after real_runs.RUN_TIMEOUT). The tables are printed after every run, so a bench stopped early
still reports what it measured.

Per agent:
- calls: model requests (answers, repair turns, escalations);
- schema-valid %: requests whose answer parsed as JSON of the schema;
- meaning-valid %: requests whose answer also passed the agent's answer check;
- asks answered at the first try / after the repair turn / after escalation to the strong
  model / never (the step failed with a typed error): an ask is one agent step, grouped from the
  requests by its question (a repair or an escalation asks the same question again);
- median and p95 seconds per request, tokens per run, cost per run (local models are free; the
  catalogue prices them at 0).

Refusals and their kind come from the audit trail (model.invalid_output and
agent.answer_refused rows, whose notes say "refused (schema)" or "refused (meaning)").
Small models answer badly: this measures how Baton copes, not how good the models are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


from baton.demo_runs import DemoStepFailed  # noqa: E402
from baton.devstack import local, local_llm  # noqa: E402
from tests.support import real_runs  # noqa: E402
from tests.support.recording_proxy import Exchange, RecordingProxy  # noqa: E402

PROCESSES = real_runs.FLOWS


AGENT_HEADER = [
    "agent",
    "calls",
    "schema-valid",
    "meaning-valid",
    "asks ok: first / repair / escalation / never",
    "median s",
    "p95 s",
    "tokens/run",
    "cost/run",
]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def refusals_by_agent(db_url: str) -> dict[str, Counter[str]]:
    """Per agent: refused requests by kind (schema / meaning), from the audit trail."""
    from sqlmodel import select

    from activities.audit import AuditRecord
    from activities.database import Database

    db = Database(db_url)
    found: dict[str, Counter[str]] = defaultdict(Counter)
    with db.session() as session:
        rows = session.exec(
            select(AuditRecord).where(
                AuditRecord.action.in_(["model.invalid_output", "agent.answer_refused"])  # type: ignore[attr-defined]
            )
        ).all()
    for row in rows:
        note = str(json.loads(row.detail_json).get("note") or "")
        kind = "schema" if note.startswith("refused (schema)") else "meaning"
        found[row.actor.removeprefix("agent:")][kind] += 1
    return found


def asks(exchanges: list[Exchange]) -> dict[str, list[list[Exchange]]]:
    """Per agent, the requests grouped into asks (same question, in order)."""
    grouped: dict[tuple[str, str], list[Exchange]] = defaultdict(list)
    for e in exchanges:
        grouped[(e.agent, e.question)].append(e)
    out: dict[str, list[list[Exchange]]] = defaultdict(list)
    for (agent, _), group in grouped.items():
        out[agent].append(group)
    return out


def agent_rows(
    exchanges: list[Exchange], refused: dict[str, Counter[str]], strong: str, runs: int
) -> list[list[str]]:
    rows = []
    by_agent: dict[str, list[Exchange]] = defaultdict(list)
    for e in exchanges:
        by_agent[e.agent].append(e)
    grouped = asks(exchanges)
    for agent in sorted(by_agent):
        calls = by_agent[agent]
        n = len(calls)
        schema_bad = refused[agent]["schema"] + sum(1 for c in calls if c.status != 200)
        meaning_bad = refused[agent]["meaning"]
        outcome: Counter[str] = Counter()
        for group in grouped[agent]:
            escalated = any(c.model == strong for c in group) and group[0].model != strong
            repaired = any(c.repair for c in group)
            if escalated:
                outcome["escalation"] += 1
            elif repaired:
                outcome["repair"] += 1
            else:
                outcome["first"] += 1
        # an ask that failed ended on a refused answer (the last refused request of its ask):
        # refusals beyond those a further request of the same ask followed
        never = max(0, sum(refused[agent].values()) - (n - len(grouped[agent])))
        for bucket in ("escalation", "repair", "first"):
            take = min(never, outcome[bucket])
            outcome[bucket] -= take
            outcome["never"] += take
            never -= take
        total = sum(outcome.values()) or 1
        seconds = [c.seconds for c in calls]
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in calls)
        rows.append(
            [
                agent,
                str(n),
                f"{100 * (n - schema_bad) / n:.0f}%",
                f"{100 * (n - schema_bad - meaning_bad) / n:.0f}%",
                " / ".join(
                    f"{100 * outcome[k] / total:.0f}%"
                    for k in ("first", "repair", "escalation", "never")
                ),
                f"{statistics.median(seconds):.1f}",
                f"{p95(seconds):.1f}",
                f"{tokens / runs:.0f}",
                "$0.0000",
            ]
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def exchanges_from_audit(db_url: str) -> list[Exchange]:
    """The routed agents' requests as the audit trail recorded them (``--from-db``: a run that
    was stopped before it printed): one ``model.*`` row per request, its seconds from the row
    before it in the same activity attempt (the policy decision or the previous answer), the
    ask = that activity attempt. Unrouted agents (the auction's) leave no per-request rows."""
    from sqlmodel import select

    from activities.audit import AuditRecord
    from activities.database import Database

    db = Database(db_url)
    with db.session() as session:
        rows = session.exec(select(AuditRecord).order_by(AuditRecord.position)).all()  # type: ignore[arg-type]
    last_at: dict[str, float] = {}
    previous: dict[str, str] = {}
    out: list[Exchange] = []
    for row in rows:
        parts = row.seq.split("/")
        if len(parts) < 5 or parts[0] != "act" or parts[2] not in ("route", "llm"):
            continue
        key = f"{row.workflow_id}/{parts[1]}/{parts[4] if parts[2] == 'llm' else parts[3]}"
        at = row.recorded_at.timestamp()
        if row.action.startswith("model.") and row.action != "model.routed":
            detail = json.loads(row.detail_json)
            note = str(detail.get("note") or "")
            out.append(
                Exchange(
                    agent=row.actor.removeprefix("agent:"),
                    model=row.model or "",
                    repair=note.endswith("[repair turn]")
                    or previous.get(key) == f"{row.model}:model.invalid_output",
                    question=key,
                    seconds=at - last_at.get(key, at),
                    status=599 if row.action == "model.server_error" else 200,
                    prompt_tokens=row.tokens,
                    finished_at=at,
                )
            )
            previous[key] = f"{row.model}:{row.action}"
        last_at[key] = at
    return out


def catalogue_with_timeout(timeout_s: float | None, state: Path) -> Path:
    """The llama.cpp catalogue, or a copy with every model's request timeout set to
    ``timeout_s`` (a loaded machine: measure the answers, not the load)."""
    if timeout_s is None:
        return real_runs.LLAMA_CATALOGUE
    catalogue = json.loads(real_runs.LLAMA_CATALOGUE.read_text())
    for model in catalogue["models"]:
        model["timeout_s"] = timeout_s
    path = state / "models.llama-cpp.json"
    path.write_text(json.dumps(catalogue, indent=2))
    return path


async def bench(runs: int, names: list[str], timeout_s: float | None = None) -> str:
    from tests.conftest import _harness
    from tests.support.scripted_model import ScriptedModelServer

    gaps = local_llm.missing()
    if gaps:
        raise SystemExit(f"not installed: {'; '.join(gaps)}: {local_llm.INSTALL_HINT}")
    state = Path(tempfile.mkdtemp(prefix="baton-real-bench-"))
    print(f"state (database for --from-db): {state / 'baton.db'}", flush=True)
    llama = local_llm.LlamaServer(REPO_ROOT / ".baton")
    llama.start()
    proxy = RecordingProxy(llama.url)
    proxy.start()
    embeddings = ScriptedModelServer()  # the local model server: only its embeddings are used
    embeddings.start("127.0.0.1", 0)
    env = await local.start_dev_server(extra_args=())
    db_url = f"sqlite:///{state / 'baton.db'}"
    catalogue_path = catalogue_with_timeout(timeout_s, state)
    verdicts: dict[str, Counter[str]] = defaultdict(Counter)
    durations: dict[str, list[float]] = defaultdict(list)
    tokens_per_process: dict[str, int] = Counter()

    class Upstream:  # what _harness needs of a model server: its base URL
        url = proxy.url

    catalogue = json.loads(real_runs.LLAMA_CATALOGUE.read_text())
    strong = next(m["name"] for m in catalogue["models"] if m["tier"] == "strong")

    def report() -> str:
        """The tables so far (printed after every run, so a stopped bench still reports)."""
        done = [name for name in names if durations[name]]
        runs_of = {name: len(durations[name]) for name in done}
        total = sum(runs_of.values()) or 1
        agents = agent_rows(proxy.exchanges, refusals_by_agent(db_url), strong, total)
        return "\n".join(
            [
                f"Real-model bench, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
                f"{llama.models[0].served_name} (strong) + {llama.models[1].served_name} "
                f"(cheap) on llama.cpp, {local_llm.threads()} threads, {total} run(s)"
                + (f", request timeout {timeout_s:g} s" if timeout_s else ""),
                "",
                table(AGENT_HEADER, agents),
                "",
                table(
                    [
                        "process",
                        "runs",
                        "completed",
                        "failed cleanly",
                        "wrong",
                        "unfinished",
                        "median s",
                        "tokens/run",
                    ],
                    [
                        [
                            name,
                            str(runs_of[name]),
                            str(verdicts[name]["completed"]),
                            str(verdicts[name]["failed cleanly"]),
                            str(verdicts[name]["WRONG"]),
                            str(verdicts[name]["unfinished"]),
                            f"{statistics.median(durations[name]):.0f}",
                            f"{tokens_per_process[name] / runs_of[name]:.0f}",
                        ]
                        for name in done
                    ],
                ),
            ]
        )

    try:
        for name in names:
            for _ in range(runs):
                before = len(proxy.exchanges)
                async with _harness(
                    env.client,
                    Upstream,  # type: ignore[arg-type]
                    db_url,
                    model_catalogue=catalogue_path,
                    embeddings_base_url=embeddings.url,
                ) as h:
                    h.model = embeddings
                    started = time.monotonic()
                    try:
                        verdict = await PROCESSES[name](h)
                    except AssertionError as err:
                        verdict = f"WRONG: {err}"
                    except DemoStepFailed as err:  # the run did not end within RUN_TIMEOUT
                        verdict = f"unfinished: {err}"
                    durations[name].append(time.monotonic() - started)
                kind = verdict.split(":")[0]
                verdicts[name][kind] += 1
                tokens_per_process[name] += sum(
                    e.prompt_tokens + e.completion_tokens for e in proxy.exchanges[before:]
                )
                print(f"{name}: {verdict[:300]} ({durations[name][-1]:.0f}s)", flush=True)
                print(report() + "\n", flush=True)
    finally:
        await env.shutdown()
        embeddings.stop()
        proxy.stop()
        llama.stop()
    return report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per process (default 1)")
    parser.add_argument(
        "--process", action="append", choices=list(PROCESSES), help="default: every process"
    )
    parser.add_argument(
        "--from-db",
        metavar="BATON_DB",
        help="only print the per-agent table from the audit trail of an earlier run's database "
        "(a bench stopped before it printed; its state directory is printed at start)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        help="set every model's request timeout (the catalogue's timeout_s) to this many "
        "seconds, below the agent activities' 15 minutes: on a loaded machine",
    )
    args = parser.parse_args()
    if args.from_db:
        db_url = f"sqlite:///{Path(args.from_db).resolve()}"
        catalogue = json.loads(real_runs.LLAMA_CATALOGUE.read_text())
        strong = next(m["name"] for m in catalogue["models"] if m["tier"] == "strong")
        rows = agent_rows(exchanges_from_audit(db_url), refusals_by_agent(db_url), strong, 1)
        print(table(AGENT_HEADER, rows))
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.timeout_s is not None and not 0 < args.timeout_s < 900:
        parser.error("--timeout-s must be between 0 and 900 seconds")
    report = asyncio.run(bench(args.runs, args.process or list(PROCESSES), args.timeout_s))
    print()
    print(report)


if __name__ == "__main__":
    main()
