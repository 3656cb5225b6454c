"""Regenerate every file derived from proto/: grpcio stubs and the SDK.

    python scripts/gen_proto.py           # write the generated code in place
    python scripts/gen_proto.py --check   # exit 1 when committed code is stale

grpcio stubs (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are written
beside the ``.proto`` files, so ``proto/`` is their import root, as
googleapis-common-protos ships them. The betterproto2 SDK code goes to
``clients/perseus_sdk/_generated`` and is imported only as a sub-package.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
SDK_OUT = ROOT / "clients" / "perseus_sdk" / "_generated"
GRPC_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _protoc(*args: str) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", *args]
    # betterproto2's plugin formats its output with the ruff next to python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, check=True, env=env)


def _proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(grpc_out: Path, sdk_out: Path) -> None:
    grpc_out.mkdir(parents=True, exist_ok=True)
    sdk_out.mkdir(parents=True, exist_ok=True)
    files = _proto_files()
    _protoc(f"--python_out={grpc_out}", f"--pyi_out={grpc_out}", f"--grpc_python_out={grpc_out}", *files)
    plugin = Path(sys.executable).parent / "protoc-gen-python_betterproto2"
    _protoc(
        f"--plugin=protoc-gen-python_betterproto2={plugin}",
        f"--python_betterproto2_out={sdk_out}",
        "--python_betterproto2_opt=client_generation=async",
        *files,
    )
    # The grpcio output is a regular package tree rooted at grpc_out.
    for directory in {p.parent for p in grpc_out.rglob("*_pb2.py")}:
        while directory != grpc_out:
            (directory / "__init__.py").touch()
            directory = directory.parent


def _generated(root: Path) -> set[Path]:
    grpc = {p.relative_to(root) for p in (root / "proto").rglob("*") if p.name.endswith(GRPC_SUFFIXES)}
    sdk_dir = root / "clients" / "perseus_sdk" / "_generated"
    sdk = {p.relative_to(root) for p in sdk_dir.rglob("*.py")} if sdk_dir.exists() else set()
    return grpc | sdk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    args = parser.parse_args()
    if not args.check:
        for path in _generated(ROOT):
            (ROOT / path).unlink()
        shutil.rmtree(SDK_OUT, ignore_errors=True)
        generate(PROTO_ROOT, SDK_OUT)
        print(f"generated {len(_generated(ROOT))} files")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        shutil.copytree(PROTO_ROOT, fresh / "proto", ignore=shutil.ignore_patterns(*[f"*{s}" for s in GRPC_SUFFIXES]))
        generate(fresh / "proto", fresh / "clients" / "perseus_sdk" / "_generated")
        expected, actual = _generated(fresh), _generated(ROOT)
        stale = sorted(str(p) for p in expected ^ actual)
        stale += sorted(str(p) for p in expected & actual if not filecmp.cmp(fresh / p, ROOT / p, shallow=False))
    if stale:
        print("generated code is stale; run `make gen`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
