"""The vendored /docs assets: Swagger UI as ``make vendor-docs`` writes it, with its licenses, parsed by node."""

from __future__ import annotations

import json
import re
import subprocess

from gateways.rest.docs import ASSETS_PATH, STATIC, load_assets
from scripts.vendor_assets import BUNDLES, SWAGGER_UI

FILES, PACKAGE, TARGET, VERSION = SWAGGER_UI.files, SWAGGER_UI.name, BUNDLES["docs"].target, SWAGGER_UI.version


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


HARNESS = """
const fs = require("fs"), vm = require("vm");
const stored = {}, calls = [];
const storage = {getItem: (k) => (k in stored ? stored[k] : null), setItem: (k, v) => { stored[k] = String(v); },
                 removeItem: (k) => { delete stored[k]; }};
let authorized = null, config = null;
const root = {getAttribute: (name) => (name === "data-spec" ? "/public/v1/openapi.json" : null)};
const window = {sessionStorage: storage, SwaggerUIBundle: (c) => {
  config = c;
  c.requestInterceptor({url: c.url});  // Swagger UI may fetch the document before it returns
  return {authSelectors: {authorized: () => authorized},
          preauthorizeApiKey: (scheme, key) => calls.push([scheme, key])};
}};
const document = {getElementById: () => root, body: {setAttribute: (k, v) => calls.push([k, v])}};
const run = () => vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), {window, document});
run();
config.onComplete();                       // nothing stored yet: nothing preauthorized
authorized = {getIn: (path) => (path.join(".") === "ApiKey.value" ? "pk_entered" : undefined)};
config.requestInterceptor({url: "/public/v1/exchanges"});  // a try-it request after Authorize
calls.push(["stored", stored["perseus.apiKey"]]);
run(); config.onComplete();                // a reload of the tab: the key is authorized again
authorized = null;
config.requestInterceptor({url: "/public/v1/exchanges"});  // after Logout
console.log(JSON.stringify({config: {url: config.url, validatorUrl: config.validatorUrl,
  persist: config.persistAuthorization, tryIt: config.tryItOutEnabled}, calls, stored}));
"""


def test_the_explorer_keeps_the_entered_key_in_session_storage_only() -> None:
    """explorer.js against a stand-in SwaggerUIBundle in node: the key entered in Authorize is kept in
    sessionStorage['perseus.apiKey'] and authorizes the next page load; Logout forgets it; the spec is the
    served one, the public validator is off and Swagger UI's own localStorage persistence too."""
    result = subprocess.run(
        ["node", "-e", HARNESS, str(STATIC / "explorer.js")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["config"] == {
        "url": "/public/v1/openapi.json",
        "validatorUrl": None,
        "persist": False,
        "tryIt": True,
    }
    assert seen["calls"] == [
        ["data-state", "ready"],
        ["stored", "pk_entered"],
        ["ApiKey", "pk_entered"],
        ["data-state", "ready"],
    ]
    assert seen["stored"] == {}
