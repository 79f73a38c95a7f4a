"""docs/cli.md (written by scripts/gen_cli_reference.py from the real `--help` output) lists
every command of the `baton` CLI with every option, and no command that is gone: a new or
renamed command or option without a regenerated page fails here."""

from __future__ import annotations

import re

import click

from baton.cli import baton
from baton.settings import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "cli.md"


def commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], click.Command]:
    found = {path: command}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
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
    found = commands(baton)
    assert set(documented) == set(found), (
        f"missing: {sorted(set(found) - set(documented))}, "
        f"gone: {sorted(set(documented) - set(found))}; run scripts/gen_cli_reference.py"
    )
    for path, command in found.items():
        for param in command.params:
            for option in param.opts if isinstance(param, click.Option) else ():
                assert option in documented[path], (
                    f"`baton {' '.join(path)}` option {option} is not in {PAGE.name}; "
                    "run scripts/gen_cli_reference.py"
                )
        if command.help:
            first = command.help.split()[:4]
            assert " ".join(first) in " ".join(documented[path].split()), path
