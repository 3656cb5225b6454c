"""The architecture as the folder tree shows it: ``core`` and ``gateways`` are peers, ``common`` is below both,
the SDK stands alone, and only ``perseus_cli`` sees everything. Every import in every module is checked, the
ones inside functions included (the CLI's lazy imports are exactly where an arrow would hide)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "common": ROOT / "common",
    "core": ROOT / "core",
    "gateways": ROOT / "gateways",
    "perseus_cli": ROOT / "perseus_cli",
    "perseus_sdk": ROOT / "clients" / "perseus_sdk",
}
# What each package must never import (its own first-party neighbours that sit beside or above it).
FORBIDDEN = {
    "common": {"core", "gateways", "perseus_cli", "perseus_sdk", "tests"},
    "core": {"gateways", "perseus_cli", "perseus_sdk", "tests"},
    "gateways": {"core", "perseus_cli", "perseus_sdk", "tests"},
    "perseus_sdk": {"common", "core", "gateways", "perseus_cli", "tests"},
    "perseus_cli": {"perseus_sdk", "tests"},
}


def imported_roots(source: str) -> set[str]:
    """The top-level package of every absolute import in ``source``."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def arrows(package: str) -> list[str]:
    """Forbidden imports of ``package``, as ``file -> package`` lines."""
    found = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        if "_generated" in path.parts:
            continue
        for root in sorted(imported_roots(path.read_text()) & FORBIDDEN[package]):
            found.append(f"{path.relative_to(ROOT)} -> {root}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_arrow(package: str) -> None:
    assert arrows(package) == []


def test_the_walk_sees_lazy_imports_inside_functions() -> None:
    source = "def run():\n    from gateways.rest.app import run_rest\n    import core.app\n"
    assert imported_roots(source) == {"gateways", "core"}


def test_only_the_cli_imports_both_sides() -> None:
    """The CLI really is the one place that joins them (else the layering test above checks nothing there)."""
    both = {"core", "gateways"}
    seen = set().union(*(imported_roots(p.read_text()) for p in PACKAGES["perseus_cli"].rglob("*.py")))
    assert both <= seen
