"""The core's layers as its folders show them: ``domain`` (pure) ← ``services`` (ports) ← ``codec`` ← adapters and
rpc ← app. A service names what it needs as a Protocol and never imports an adapter or a driver, so it can be
tested without I/O and an adapter can change without touching it. Every import is checked, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
DRIVERS = ("asyncpg", "redis", "hiredis", "grpc", "google.protobuf", "perseus.marketdata")
FORBIDDEN = {
    "domain": ("core.services", "core.codec", "core.adapters", "core.rpc", "core.app", "core.exchange_mode", *DRIVERS),
    "services": ("core.codec", "core.adapters", "core.rpc", "core.app", "core.exchange_mode", *DRIVERS),
    "codec": ("core.adapters", "core.rpc", "core.app", "core.exchange_mode", "asyncpg", "redis"),
}


def imported_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((CORE / layer).rglob("*.py")):
        for module in sorted(imported_modules(path.read_text())):
            if any(module == banned or module.startswith(banned + ".") for banned in FORBIDDEN[layer]):
                found.append(f"{path.relative_to(CORE.parent)} -> {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_inner_layer_imports_an_outer_one_or_a_driver(layer: str) -> None:
    assert violations(layer) == []


def test_the_check_sees_a_driver_import_inside_a_function() -> None:
    assert imported_modules("def f():\n    import redis.asyncio as aioredis\n") == {"redis.asyncio"}
