"""The agents' system prompts, as Markdown files a reviewer reads: ``<role>.md`` (the stable
variant) and ``<role>.<variant>.md``.

Each prompt's first line is ``agent: <role>`` (the agent protocol: the model server and the
audit trail know the agent by it), then what the agent does, what each answer field means, the
context the answer depends on, and one short worked example.

Files are read on first use, never at import time, and kept for the process's life.

Must not: do anything but read these files.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

PROMPT_DIR = Path(__file__).parent
STABLE = "stable"  # workflows.contracts.STABLE_VERSION (not imported: this package stays leaf)


@functools.cache
def read_prompt(role: str, variant: str = STABLE) -> str:
    """The text of ``role``'s prompt ``variant`` (FileNotFoundError names the file)."""
    name = f"{role}.md" if variant == STABLE else f"{role}.{variant}.md"
    text = (PROMPT_DIR / name).read_text(encoding="utf-8").strip()
    first = text.splitlines()[0] if text else ""
    if first.strip() != f"agent: {role}":
        raise ValueError(f"{PROMPT_DIR / name}: the first line must be 'agent: {role}'")
    return text


class Variants(Mapping[str, str]):
    """One role's prompt variants: names known up front, texts read on first access."""

    def __init__(self, role: str, names: list[str], texts: Mapping[str, str] | None = None):
        self.role = role
        self._names = list(names)
        self._texts = dict(texts or {})

    def __getitem__(self, variant: str) -> str:
        if variant in self._texts:
            return self._texts[variant]
        if variant not in self._names:
            raise KeyError(variant)
        return read_prompt(self.role, variant)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._names, *self._texts]))

    def __len__(self) -> int:
        return len(set(self._names) | set(self._texts))


class PromptTable(Mapping[str, Variants]):
    """Role -> its prompt variants (activities/agents.py ``route`` picks one per process
    version). Processes add their roles at the composition root (``register``)."""

    def __init__(self, roles: Mapping[str, list[str]]) -> None:
        self._roles = {role: Variants(role, names) for role, names in roles.items()}

    def __getitem__(self, role: str) -> Variants:
        return self._roles[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)

    def register(self, role: str, variants: list[str]) -> None:
        """Add ``role`` with prompt files for ``variants`` (no-op if it is known)."""
        self._roles.setdefault(role, Variants(role, variants))

    def setdefault(self, role: str, texts: Mapping[str, str]) -> Variants:
        """Add ``role`` with literal prompt texts unless it is known (older callers)."""
        return self._roles.setdefault(role, Variants(role, [], texts))


class StablePrompts(Mapping[str, str]):
    """Role -> its stable prompt, read on first access (processes whose agents have no
    variants: support, customer onboarding, the auction)."""

    def __init__(self, roles: list[str]) -> None:
        self._roles = list(roles)

    def __getitem__(self, role: str) -> str:
        if role not in self._roles:
            raise KeyError(role)
        return read_prompt(role)

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)
