"""The labelled retrieval set: questions a support engineer, a salesperson or an agent would ask,
and the seed documents (activities/knowledge_seed.py, tenant acme) that answer them.

Written for this project by hand. Questions are phrased the way people ask, mostly without the
documents' own words, so the set measures meaning, not keyword overlap. A query may have several
relevant documents; recall@k counts the share of them found in the top k.

The set itself is data, in bench/knowledge_labels.json: per group (product, policies, customer
notes) a list of ``{"query": ..., "relevant": [document ids]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS_FILE = Path(__file__).with_suffix(".json")

LABELLED_QUERIES: list[tuple[str, set[str]]] = [
    (item["query"], set(item["relevant"]))
    for group in json.loads(LABELS_FILE.read_text()).values()
    for item in group
]
