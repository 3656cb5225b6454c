"""Write the OpenAPI and AsyncAPI documents the gateways serve into clients/typescript/spec/.

    python scripts/export_specs.py           # write the two documents
    python scripts/export_specs.py --check   # exit 1 when the committed snapshot is stale

The TypeScript SDK's types are generated from this snapshot (``npm run gen``
in clients/typescript), so a stale snapshot means stale types: CI runs the
check, then ``npm run gen:check`` compares the generated types with it.

The documents are built by the same functions the gateways call at startup
(no server is needed). Two values would otherwise vary per machine and are
pinned instead: the version (the gateways print the installed package's,
which differs between a release and a checkout) and the AsyncAPI host (the
gateway's listen address; here its default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file from anywhere: the gateways are imported from the checkout

from gateways.common.settings import DEFAULT_LISTEN_ADDRS  # noqa: E402
from gateways.rest.app import OPERATIONS  # noqa: E402
from gateways.rest.openapi import openapi_document  # noqa: E402
from gateways.rest.webhooks import document_with_webhooks  # noqa: E402
from gateways.ws.asyncapi import asyncapi_document  # noqa: E402

SPEC_DIR = ROOT / "clients" / "typescript" / "spec"
SNAPSHOT_VERSION = "snapshot"  # what the types were generated from, not a release


def documents() -> dict[str, dict[str, Any]]:
    return {
        "openapi.json": document_with_webhooks(openapi_document(OPERATIONS, version=SNAPSHOT_VERSION)),
        "asyncapi.json": asyncapi_document(SNAPSHOT_VERSION, DEFAULT_LISTEN_ADDRS["ws"]),
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed snapshot instead")
    args = parser.parse_args()
    stale = []
    for name, document in documents().items():
        path = SPEC_DIR / name
        text = render(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        names = ", ".join(str(p) for p in stale)
        print(f"stale: {names}; run `make ts-gen` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
