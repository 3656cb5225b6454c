"""Rebuild the REST gateway's vendored browser assets from the npm registry: one bundle of pages at a time.

    python scripts/vendor_assets.py docs            # Swagger UI for /docs, into gateways/rest/static/swagger-ui/
    python scripts/vendor_assets.py console         # lightweight-charts for /console, into static/console/vendor/
    python scripts/vendor_assets.py console --check # exit 1 when the committed files differ from the packages'

``make vendor-docs`` and ``make vendor-console`` run it (``vendor-docs-check``, ``vendor-console-check``
compare). Each package is fetched with ``npm pack`` (the registry's ordinary client, which checks the tarball
against the registry's integrity) at its pinned version, and its sha512 is compared with the pinned one too,
so a rebuild gives the same bytes or fails. Only what the pages load is kept (without source-map comments,
whose maps are not shipped), with the licenses and notices; a ``SOURCE`` file says where the bytes came from.
The files are committed, so a checkout serves the pages with no network. docs/design/api-explorer.md says why
Swagger UI, docs/design/console.md why lightweight-charts.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "gateways" / "rest" / "static"
SOURCE_MAP = re.compile(rb"\n?/[/*]# sourceMappingURL=[^\n*]*(\*/)?\s*$")


@dataclass(frozen=True, slots=True)
class Package:
    """``name@version`` on the npm registry, its ``dist.integrity`` (``npm view name@version dist.integrity``),
    and the files kept: the name written in the bundle's folder -> the path inside the tarball's ``package/``."""

    name: str
    version: str
    integrity: str
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bundle:
    """What one ``make vendor-<name>`` writes into ``target``; ``extra`` derives further files (a NOTICE) from
    the kept ones and the packages' ``package.json``."""

    name: str
    target: Path
    packages: tuple[Package, ...]
    extra: Callable[[dict[str, bytes], dict[str, dict[str, object]]], dict[str, bytes]] | None = None

    @property
    def main(self) -> Package:
        return self.packages[0]


SWAGGER_UI = Package(
    "swagger-ui-dist",
    "5.36.0",
    "sha512-Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A==",
    {
        name: name
        for name in ("swagger-ui-bundle.js", "swagger-ui-bundle.js.LICENSE.txt", "swagger-ui.css", "LICENSE", "NOTICE")
    },
)
LIGHTWEIGHT_CHARTS = Package(
    "lightweight-charts",
    "5.3.0",
    "sha512-w16fu2/FteUkIJdgc9G2tOCKs1fwFSqnqF8+kMgHGv0uGIfcfpEJhziSaQbML1yrkbeg4nQXV3msjmhBzhLNhw==",
    {
        "lightweight-charts.standalone.production.js": "dist/lightweight-charts.standalone.production.js",
        "LICENSE": "LICENSE",
    },
)
# bundled into lightweight-charts' standalone build (its one dependency); the tarball has no LICENSE file,
# so the NOTICE names it with the licence its package.json declares
FANCY_CANVAS = Package(
    "fancy-canvas",
    "2.1.0",
    "sha512-nifxXJ95JNLFR2NgRV4/MxVP45G9909wJTEKz5fg/TZS20JJZA6hfgRVh/bC9bwl2zBtBNcYPjiBE4njQHVBwQ==",
)
LICENSE_BANNER = re.compile(rb"/\*!\s*\n((?: \*[^\n]*\n)+?) \*/")


def console_notice(files: dict[str, bytes], manifests: dict[str, dict[str, object]]) -> dict[str, bytes]:
    """The npm package ships no NOTICE; its README asks for the attribution notice and a link to TradingView
    (the page's footer has the link). The notice is the bundle's own ``@license`` banner, and the bundled
    dependency is named with its declared licence."""
    banner = LICENSE_BANNER.search(files["lightweight-charts.standalone.production.js"])
    if banner is None:
        raise SystemExit("lightweight-charts: no @license banner in the standalone bundle")
    lines = [line.removeprefix(b" *").strip() for line in banner.group(1).splitlines()]
    text = b"\n".join(line for line in lines if line and line != b"@license").decode()
    canvas = manifests[FANCY_CANVAS.name]
    return {
        "NOTICE": (
            f"{text}\nhttps://www.tradingview.com/\n\n"
            f"The standalone build bundles {FANCY_CANVAS.name} {FANCY_CANVAS.version} "
            f"(licence {canvas['license']}, author {canvas['author']}).\n"
        ).encode()
    }


BUNDLES = {
    "docs": Bundle("docs", STATIC / "swagger-ui", (SWAGGER_UI,)),
    "console": Bundle(
        "console", STATIC / "console" / "vendor", (LIGHTWEIGHT_CHARTS, FANCY_CANVAS), extra=console_notice
    ),
}


def fetch(package: Package, into: Path) -> Path:
    """``npm pack`` of the pinned package into ``into``; the tarball's path, its sha512 checked."""
    result = subprocess.run(
        ["npm", "pack", f"{package.name}@{package.version}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    [packed] = json.loads(result.stdout)
    tarball: Path = into / str(packed["filename"])
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != package.integrity:
        raise SystemExit(f"{package.name}@{package.version}: integrity {digest} is not the pinned {package.integrity}")
    return tarball


def extract(package: Package, tarball: Path) -> tuple[dict[str, bytes], dict[str, object]]:
    """The kept files (source-map comments dropped) and the package's ``package.json``."""
    files: dict[str, bytes] = {}
    with tarfile.open(tarball) as archive:

        def read(path: str) -> bytes:
            member = archive.extractfile(f"package/{path}")
            if member is None:
                raise SystemExit(f"{package.name}@{package.version} has no {path}")
            return member.read()

        for name, path in package.files.items():
            content = read(path)
            files[name] = SOURCE_MAP.sub(b"\n", content) if name.endswith((".js", ".css")) else content
        manifest: dict[str, object] = json.loads(read("package.json"))
    return files, manifest


def build(bundle: Bundle) -> dict[str, bytes]:
    """Every file of ``bundle``, by name, as ``make vendor-<name>`` writes it."""
    files: dict[str, bytes] = {}
    manifests: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for package in bundle.packages:
            kept, manifests[package.name] = extract(package, fetch(package, Path(tmp)))
            files.update(kept)
    if bundle.extra is not None:
        files.update(bundle.extra(files, manifests))
    script = Path(__file__).relative_to(ROOT).as_posix()
    sources = "".join(f"{p.name} {p.version} from the npm registry ({p.integrity}); " for p in bundle.packages)
    files["SOURCE"] = f"{sources}rebuilt by `make vendor-{bundle.name}` ({script} {bundle.name}).\n".encode()
    return files


def _same(path: Path, content: bytes) -> bool:
    return path.is_file() and path.read_bytes() == content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("bundle", choices=sorted(BUNDLES))
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    args = parser.parse_args(argv)
    bundle = BUNDLES[args.bundle]
    files = build(bundle)
    if args.check:
        stale = [name for name, content in files.items() if not _same(bundle.target / name, content)]
        for name in stale:
            path = (bundle.target / name).relative_to(ROOT)
            print(f"stale: {path} (run `make vendor-{bundle.name}`)", file=sys.stderr)
        return 1 if stale else 0
    bundle.target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (bundle.target / name).write_bytes(content)
    total = sum(len(c) for c in files.values())
    print(f"{bundle.main.name} {bundle.main.version}: {total} bytes in {bundle.target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
