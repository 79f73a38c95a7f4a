"""Where the tests find the repository's policy and the installed ``baton`` command."""

from __future__ import annotations

import sys
from pathlib import Path

from baton.settings import REPO_ROOT

#: the repository's Rego policy and its data (what the worker loads by default)
POLICY_DIR = REPO_ROOT / "policy"
#: the ``baton`` console script of the interpreter running the tests
BATON = str(Path(sys.executable).parent / "baton")
