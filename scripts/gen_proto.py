"""Regenerate every file derived from proto/: grpcio stubs and the SDK.

    python scripts/gen_proto.py           # write the generated code in place
    python scripts/gen_proto.py --check   # exit 1 when committed code is stale

grpcio stubs (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are written
beside the ``.proto`` files, so ``proto/`` is their import root, as
googleapis-common-protos ships them. The betterproto2 SDK code goes to
``clients/perseus_sdk/_generated`` and is imported only as a sub-package.

Generation always happens in an empty temporary directory (the betterproto2
plugin formats with ruff, whose settings would otherwise depend on where it
runs), and the result is then compared with or copied over the tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
SDK_DIR = Path("clients/perseus_sdk/_generated")
GRPC_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _protoc(cwd: Path, *args: str) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", *args]
    # betterproto2's plugin formats its output with the ruff next to python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"protoc failed:\n{result.stderr}")


def generate(out: Path) -> dict[Path, bytes]:
    """Generate into the empty directory ``out``; returns every file by its path in the repository."""
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    grpc_out, sdk_out = out / "proto", out / SDK_DIR
    grpc_out.mkdir(parents=True)
    sdk_out.mkdir(parents=True)
    _protoc(out, f"--python_out={grpc_out}", f"--pyi_out={grpc_out}", f"--grpc_python_out={grpc_out}", *files)
    plugin = Path(sys.executable).parent / "protoc-gen-python_betterproto2"
    _protoc(
        out,
        f"--plugin=protoc-gen-python_betterproto2={plugin}",
        f"--python_betterproto2_out={sdk_out}",
        "--python_betterproto2_opt=client_generation=async",
        *files,
    )
    for directory in {p.parent for p in grpc_out.rglob("*_pb2.py")}:  # a regular package tree
        while directory != grpc_out:
            (directory / "__init__.py").touch()
            directory = directory.parent
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def committed() -> dict[Path, bytes]:
    """The generated files now in the tree."""
    grpc = [p for p in PROTO_ROOT.rglob("*") if p.name.endswith(GRPC_SUFFIXES) or p.name == "__init__.py"]
    sdk = [p for p in (ROOT / SDK_DIR).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return {p.relative_to(ROOT): p.read_bytes() for p in grpc + sdk}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    current = committed()
    stale = sorted(str(p) for p in fresh.keys() | current.keys() if fresh.get(p) != current.get(p))
    if args.check:
        if stale:
            print("generated code is stale; run `make gen`:", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    for path in current.keys() - fresh.keys():
        (ROOT / path).unlink()
    for path, content in fresh.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_bytes(content)
    print(f"generated {len(fresh)} files, {len(stale)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
