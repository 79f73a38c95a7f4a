"""The demo's processes on a real language model: llama.cpp's server with the local models
(Qwen2.5-Coder-0.5B-Instruct, SmolLM2-135M-Instruct) from PyPI wheels, the catalogue
config/models.llama-cpp.json, through the same worker, router and `openai` SDK as production.

Small models answer badly, so these tests prove robustness, not quality: every run must end in a
state a user can trust, whatever the model said:

- completed, with every item addressed (each unmatched bank line, ledger entry and duplicate of the
  close cited by a posted entry or waived with a reason; every granted access, CRM commit,
  published review and ticket update on record), or
- failed cleanly: every side effect compensated (postings reversed, accesses revoked, CRM commits
  reverted, reviews retracted), a typed failure, and the audit trail saying why (the refused
  answers' notes);

never "completed" with work silently skipped. Datasets are tiny (CPU prompt processing is slow).

Marker ``real_model``. Rule when the llama.cpp server or the models are not installed: skip with
the install command (`make install-llm`) on a developer's machine, FAIL when ``CI=true`` (CI
installs them first, so a missing install there is a defect, never a silent skip).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client

from baton.devstack import local_llm
from baton.settings import REPO_ROOT
from tests.conftest import Harness, _harness, require_local_llm
from tests.support import real_runs
from tests.support.real_runs import COMPLETED, FAILED_CLEANLY, LLAMA_CATALOGUE
from tests.support.scripted_model import ScriptedModelServer

# a run takes minutes on a CPU model: beyond the suite's 300 s per-test limit
pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1500)]


@pytest.fixture(scope="session")
def llama_server() -> Iterator[local_llm.LlamaServer]:
    """llama.cpp's server with the local models, once per session, on a free port."""
    require_local_llm()
    server = local_llm.LlamaServer(REPO_ROOT / ".baton")
    started = time.monotonic()
    server.start()
    print(f"\nllama.cpp server on {server.url}, ready in {time.monotonic() - started:.1f}s")
    yield server
    server.stop()


@pytest.fixture
async def real(
    temporal_client: Client,
    model_server: ScriptedModelServer,
    llama_server: local_llm.LlamaServer,
    database_url: str,
) -> AsyncIterator[Harness]:
    """A harness whose agents talk to the llama.cpp server (embeddings stay on the local model
    server: llama.cpp serves no embeddings model)."""
    assert llama_server.alive(), f"the llama.cpp server died; see {llama_server.log_file}"
    async with _harness(
        temporal_client,
        llama_server,  # type: ignore[arg-type]  # its .url is OPENAI_BASE_URL
        database_url,
        model_catalogue=LLAMA_CATALOGUE,
        embeddings_base_url=model_server.url,
    ) as h:
        h.model = model_server
        yield h


@pytest.mark.parametrize("process", list(real_runs.FLOWS))
async def test_process_on_the_local_model_ends_completed_or_failed_cleanly(
    real: Harness, process: str
) -> None:
    """The run ends completed with every item addressed, or failed cleanly (compensated, the
    audit saying why); real_runs raises AssertionError for anything else."""
    started = time.monotonic()
    verdict = await real_runs.FLOWS[process](real)
    print(f"\n{process}: {verdict} in {time.monotonic() - started:.1f}s")
    assert verdict == COMPLETED or verdict.startswith(FAILED_CLEANLY + ": "), verdict
