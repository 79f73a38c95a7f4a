"""The README is the project's front page: short (issue 17: at most 12 KB, read as
12,000 bytes so that no reading of "KB" finds it longer), the two commands
exactly as the Makefile provides them, and every relative link it holds leads to a file of the
repository (mkdocs' strict build checks the links inside docs/, not the README's). The site's
home page (docs/index.md) is the README with its links made relative to docs/."""

from __future__ import annotations

import re

from baton.settings import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_the_readme_is_a_front_page_of_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= 12_000, f"README.md is {size} bytes; move detail into docs/"


def test_the_two_commands_are_there_and_the_makefile_has_them() -> None:
    text = README.read_text()
    assert "make demo   # set up .venv, start the local stack, run every Baton process" in text
    assert "make test   # set up .venv and run the test suite" in text
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^demo: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)


def test_every_relative_link_leads_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    relative = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert relative, "the README links no documentation page"
    missing = [link for link in relative if not (REPO_ROOT / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_site_home_page_is_the_readme() -> None:
    home = (REPO_ROOT / "docs" / "index.md").read_text()
    assert home == README.read_text().replace("](docs/", "]("), (
        "docs/index.md drifted from README.md: copy the README, its 'docs/' link prefixes removed"
    )
