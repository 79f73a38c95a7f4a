"""docs/cli.md (written by scripts/gen_cli_reference.py from the real `--help` output) lists
every command of the `baton` parser with every option, and no command that is gone: a new or
renamed command or option without a regenerated page fails here."""

from __future__ import annotations

import argparse
import re

from baton.cli import build_parser
from baton.settings import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "cli.md"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(commands(sub, (*path, name)))
    return found


def sections() -> dict[tuple[str, ...], str]:
    """The page's help blocks by command path (from the headings ``## `baton close start` ``)."""
    text = PAGE.read_text()
    heads = list(re.finditer(r"^#{2,3} `baton((?: [a-z0-9-]+)*)`$", text, flags=re.M))
    out: dict[tuple[str, ...], str] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out[tuple(head.group(1).split())] = text[head.end() : end]
    return out


def test_every_command_and_option_is_on_the_page() -> None:
    documented = sections()
    parsers = commands(build_parser())
    assert set(documented) == set(parsers), (
        f"missing: {sorted(set(parsers) - set(documented))}, "
        f"gone: {sorted(set(documented) - set(parsers))}; run scripts/gen_cli_reference.py"
    )
    for path, parser in parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                assert option in documented[path], (
                    f"`baton {' '.join(path)}` option {option} is not in {PAGE.name}; "
                    "run scripts/gen_cli_reference.py"
                )
        if parser.description:
            first = parser.description.split()[:4]
            assert " ".join(first) in " ".join(documented[path].split()), path
