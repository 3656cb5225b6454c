"""Rebuild the REST gateway's vendored API-explorer assets (``/docs``) from the npm registry.

    python scripts/vendor_docs_assets.py           # fetch, verify and write gateways/rest/static/swagger-ui/
    python scripts/vendor_docs_assets.py --check   # exit 1 when the committed files differ from the package's

``make vendor-docs`` runs it. The package is fetched with ``npm pack`` (the registry's ordinary client, which
checks the tarball against the registry's integrity) at the pinned version, and its sha512 is compared with the
pinned one too, so a rebuild gives the same bytes or fails. Only what the page loads is kept: Swagger UI's
browser bundle and stylesheet (without the source-map comment, whose map is not shipped), with the package's
LICENSE and NOTICE and the bundle's third-party license notices. The files are committed, so a checkout
serves ``/docs`` with no network; docs/design/api-explorer.md says why Swagger UI.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "gateways" / "rest" / "static" / "swagger-ui"
PACKAGE = "swagger-ui-dist"
VERSION = "5.36.0"
# the registry's dist.integrity of PACKAGE@VERSION (npm view swagger-ui-dist@5.36.0 dist.integrity)
INTEGRITY = "sha512-Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A=="
FILES = ("swagger-ui-bundle.js", "swagger-ui-bundle.js.LICENSE.txt", "swagger-ui.css", "LICENSE", "NOTICE")
SOURCE_MAP = re.compile(rb"\n?/[/*]# sourceMappingURL=[^\n*]*(\*/)?\s*$")


def fetch(into: Path) -> Path:
    """``npm pack`` of the pinned package into ``into``; the tarball's path, its sha512 checked."""
    result = subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    [packed] = json.loads(result.stdout)
    tarball: Path = into / str(packed["filename"])
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"{PACKAGE}@{VERSION}: integrity {digest} is not the pinned {INTEGRITY}")
    return tarball


def extract(tarball: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(tarball) as archive:
        for name in FILES:
            member = archive.extractfile(f"package/{name}")
            if member is None:
                raise SystemExit(f"{PACKAGE}@{VERSION} has no {name}")
            content = member.read()
            files[name] = SOURCE_MAP.sub(b"\n", content) if name.endswith((".js", ".css")) else content
    files["SOURCE"] = (
        f"{PACKAGE} {VERSION} from the npm registry ({INTEGRITY}); rebuilt by `make vendor-docs` "
        "(scripts/vendor_docs_assets.py).\n"
    ).encode()
    return files


def _same(path: Path, content: bytes) -> bool:
    return path.is_file() and path.read_bytes() == content


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(fetch(Path(tmp)))
    if args.check:
        stale = [name for name, content in files.items() if not _same(TARGET / name, content)]
        for name in stale:
            print(f"stale: {(TARGET / name).relative_to(ROOT)} (run `make vendor-docs`)", file=sys.stderr)
        return 1 if stale else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (TARGET / name).write_bytes(content)
    print(f"{PACKAGE} {VERSION}: {sum(len(c) for c in files.values())} bytes in {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
