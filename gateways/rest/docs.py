"""The REST gateway's pages for people: ``/docs`` (the API explorer) and ``/docs/stream`` (the stream). Offline.

``/docs`` is Swagger UI over ``/public/v1/openapi.json``, with try-it requests sent with the key entered in
"Authorize". Swagger UI is vendored in ``static/swagger-ui`` (``make vendor-docs`` rebuilds it from the npm
registry; docs/design/api-explorer.md says why Swagger UI); the page's own script is ``static/explorer.js``.
The page also holds the document rendered as HTML inside ``<noscript>``, for a browser without scripts.

``/docs/stream`` is the AsyncAPI document rendered here as HTML, with no script: AsyncAPI's own renderer is a
3 MB bundle whose schema validation compiles code at run time (``new Function``), which the pages'
Content-Security-Policy forbids.

Every asset is served by the gateway at :data:`ASSETS_PATH`; :data:`CONTENT_SECURITY_POLICY` allows nothing
else (``data:`` images are the stylesheet's inline icons). Pure code, but for reading the packaged files.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateways.rest.openapi import DOCS_PATH

STATIC = Path(__file__).parent / "static"
STREAM_DOCS_PATH = "/docs/stream"
ASSETS_PATH = "/docs/assets"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    "": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    content: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file the pages load (and Swagger UI's licenses), by the path the gateway serves it at."""
    files = [STATIC / "explorer.js", STATIC / "docs.css", *sorted((STATIC / "swagger-ui").iterdir())]
    assets = {}
    for path in files:
        name = path.relative_to(STATIC).as_posix()
        if name != "swagger-ui/SOURCE":
            assets[f"{ASSETS_PATH}/{name}"] = Asset(path.read_bytes(), CONTENT_TYPES[path.suffix])
    return assets


def _text(value: Any) -> str:
    return html.escape(str(value))


def _head(title: str, *stylesheets: str) -> str:
    links = "".join(f"<link rel=stylesheet href='{ASSETS_PATH}/{name}'>" for name in stylesheets)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_text(title)}</title>{links}</head>"
    )


def _bar(title: str, spec_path: str, asyncapi_path: str) -> str:
    return (
        f"<header class=perseus-bar><strong>{_text(title)}</strong><a href='{DOCS_PATH}'>REST explorer</a>"
        f"<a href='{STREAM_DOCS_PATH}'>WebSocket stream</a><a href='{_text(spec_path)}'>openapi.json</a>"
        f"<a href='{_text(asyncapi_path)}'>asyncapi.json</a></header>"
    )


def _json(value: Any) -> str:
    """Pretty JSON, escaped, with each ``$ref`` to a schema a link to it on the same page."""
    text = _text(json.dumps(value, indent=2, ensure_ascii=False))
    return re.sub(
        r"&quot;#/components/schemas/([A-Za-z0-9_.-]+)&quot;",
        lambda m: f"<a href='#schema-{m.group(1)}'>&quot;#/components/schemas/{m.group(1)}&quot;</a>",
        text,
    )


def _parameters(parameters: list[dict[str, Any]]) -> str:
    if not parameters:
        return "<p>No parameters.</p>"
    rows = "".join(
        f"<tr><td><code>{_text(p['name'])}</code></td><td>{_text(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td><code>{_text(json.dumps(p['schema']))}</code></td>"
        f"<td>{_text(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return f"<table><tr><th>name</th><th>in</th><th>required</th><th>schema</th><th>about</th></tr>{rows}</table>"


def _success_schema(operation: dict[str, Any]) -> Any:
    """The schema of an operation's first 2xx answer with a body (JSON, NDJSON, CSV), or ``{}``."""
    for status, response in operation["responses"].items():
        if status.startswith("2") and response.get("content"):
            return next(iter(response["content"].values())).get("schema", {})
    return {}


def _openapi_sections(document: dict[str, Any], spec_path: str) -> str:
    """The OpenAPI document as plain HTML: every route, its parameters and body schema, then every schema."""
    info = document["info"]
    parts = [
        f"<h1>{_text(info['title'])}</h1><p>Version {_text(info['version'])}. Machine-readable: "
        f"<a href='{_text(spec_path)}'>OpenAPI 3.1</a>.</p><p>{_text(info['description'])}</p>"
    ]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            statuses = ", ".join(operation["responses"])
            parts.append(
                f"<section id='{_text(operation['operationId'])}'><h2><span class=method>{_text(method.upper())}</span>"
                f"<code>{_text(path)}</code></h2><p><b>{_text(operation['summary'])}.</b>"
                f" {_text(operation['description'])}</p>{_parameters(operation.get('parameters', []))}"
                f"<p>Responses: {_text(statuses)}.</p><pre>"
                f"{_json(_success_schema(operation))}</pre></section>"
            )
    parts.append("<section><h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f"<h3 id='schema-{_text(name)}'>{_text(name)}</h3><pre>{_json(schema)}</pre>")
    parts.append("</section>")
    return "".join(parts)


def docs_html(document: dict[str, Any], *, spec_path: str, asyncapi_path: str) -> bytes:
    """``/docs``: Swagger UI (try-it with the entered key) over ``spec_path``; the plain rendering without scripts."""
    title = f"{document['info']['title']}: API explorer"
    return (
        _head(title, "swagger-ui/swagger-ui.css", "docs.css")
        + "<body>"
        + _bar(document["info"]["title"], spec_path, asyncapi_path)
        + f"<div id=swagger-ui data-spec='{_text(spec_path)}'></div>"
        + f"<noscript><div>{_openapi_sections(document, spec_path)}</div></noscript>"
        + f"<script src='{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js'></script>"
        + f"<script src='{ASSETS_PATH}/explorer.js'></script></body></html>"
    ).encode()


def _security(document: dict[str, Any]) -> str:
    schemes = document["components"]["securitySchemes"]
    rows = "".join(
        f"<tr><td><code>{_text(scheme['name'])}</code></td><td>{_text(scheme['in'])}</td>"
        f"<td>{_text(scheme.get('description', ''))}</td></tr>"
        for scheme in schemes.values()
    )
    return f"<table><tr><th>key as</th><th>in</th><th>about</th></tr>{rows}</table>"


def _message_refs(refs: list[dict[str, str]]) -> str:
    names = [ref["$ref"].rsplit("/", 1)[-1] for ref in refs]
    return ", ".join(f"<a href='#message-{_text(name)}'><code>{_text(name)}</code></a>" for name in names)


def stream_html(document: dict[str, Any], *, spec_path: str, asyncapi_path: str) -> bytes:
    """``/docs/stream``: the AsyncAPI document for people, rendered here (no script)."""
    info = document["info"]
    parts = [
        _head(f"{info['title']}: WebSocket stream", "docs.css"),
        "<body class=perseus-doc>",
        _bar(info["title"], spec_path, asyncapi_path),
        f"<main><h1>{_text(info['title'])}</h1><p>Version {_text(info['version'])}. Machine-readable: "
        f"<a href='{_text(asyncapi_path)}'>AsyncAPI {_text(document['asyncapi'])}</a>.</p>"
        f"<pre>{_text(info['description'])}</pre>",
    ]
    for name, server in document["servers"].items():
        parts.append(
            f"<section><h2>Server <code>{_text(name)}</code></h2><p><code>{_text(server['protocol'])}://"
            f"{_text(server['host'])}</code></p>{_security(document)}</section>"
        )
    for name, channel in document["channels"].items():
        query = channel.get("bindings", {}).get("ws", {}).get("query")
        parts.append(
            f"<section id='channel-{_text(name)}'><h2>Channel <code>{_text(channel['address'])}</code></h2>"
            + (f"<p>Query parameters:</p><pre>{_json(query)}</pre>" if query else "")
        )
        for operation in document["operations"].values():
            if operation["channel"]["$ref"] == f"#/channels/{name}":
                who = "The client sends" if operation["action"] == "receive" else "The gateway sends"
                parts.append(
                    f"<p><span class='method {_text(operation['action'])}'>{_text(operation['action'])}</span>"
                    f"{who}: {_message_refs(operation['messages'])}.</p>"
                )
        parts.append("</section>")
    parts.append("<section><h2>Messages</h2>")
    for name, message in document["components"]["messages"].items():
        payload = message["payload"]
        parts.append(
            f"<h3 id='message-{_text(name)}'>{_text(name)}</h3><p>{_text(payload.get('description', ''))}</p>"
            f"<pre>{_json(payload)}</pre>"
        )
    parts.append("</section><section><h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f"<h3 id='schema-{_text(name)}'>{_text(name)}</h3><pre>{_json(schema)}</pre>")
    parts.append("</section></main></body></html>")
    return "".join(parts).encode()
