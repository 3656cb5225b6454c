"""The README is the front door: small, the two commands first, and every link in it (and in the other
Markdown files outside docs/, which `mkdocs build --strict` does not see) leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Markdown outside docs/ that people read on the forge; docs/ itself is checked by `make docs-check`.
OUTSIDE_DOCS = [README, ROOT / "bench" / "README.md", ROOT / "clients" / "README.md"]
MAX_README_BYTES = 10_500  # "at most about 10 KB": what does not fit belongs on a page under docs/
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= MAX_README_BYTES, "README.md grew past ~10 KB: move the detail to a page in docs/"
    first_block = text[text.index("```") : text.index("```", text.index("```") + 3)]
    assert first_block.split("\n")[1:3] == ["make run", "make test"], "the two commands must stay the first thing"


@pytest.mark.parametrize("path", [p for p in OUTSIDE_DOCS if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_every_docs_page_the_readme_names_is_in_the_site_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [t.removeprefix("docs/") for t in relative_links(README) if t.startswith("docs/") and t.endswith(".md")]
    assert pages, "the README links to no docs page"
    assert not [p for p in pages if p not in nav], "a page the README links to is missing from mkdocs.yml's nav"
