"""The vendored /docs assets: Swagger UI as ``make vendor-docs`` writes it, with its licenses, parsed by node."""

from __future__ import annotations

import re
import subprocess

from gateways.rest.docs import ASSETS_PATH, STATIC, load_assets
from scripts.vendor_docs_assets import FILES, PACKAGE, TARGET, VERSION


def test_every_vendored_file_and_license_is_packaged_and_served() -> None:
    assets = load_assets()
    for name in FILES:
        assert (TARGET / name).is_file()
        assert f"{ASSETS_PATH}/swagger-ui/{name}" in assets
    assert "Apache License" in (TARGET / "LICENSE").read_text()
    assert (TARGET / "SOURCE").read_text().startswith(f"{PACKAGE} {VERSION} ")
    assert f"{ASSETS_PATH}/explorer.js" in assets and f"{ASSETS_PATH}/docs.css" in assets


def test_no_source_map_or_external_font_is_referenced() -> None:
    for path in (TARGET / "swagger-ui-bundle.js", TARGET / "swagger-ui.css", STATIC / "docs.css"):
        text = path.read_text()
        assert "sourceMappingURL" not in text
        assert not re.search(r"@import|@font-face|url\(\s*['\"]?(https?:)?//", text), path


def test_the_bundle_and_the_page_script_parse() -> None:
    """``node --check``: the vendored bundle and our script are valid JavaScript (node is the TS SDK's)."""
    for path in (TARGET / "swagger-ui-bundle.js", STATIC / "explorer.js"):
        result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
