"""``/docs``: a self-contained HTML page of the OpenAPI document, for people. Works offline.

No CDN, no script: the page is rendered here from the same document
``/public/v1/openapi.json`` serves (routes, parameters, costs, error codes,
the schema of every body), with its styles inline. Pure code.
"""

from __future__ import annotations

import html
import json
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
h1{margin-bottom:.2rem}code,pre{font:13px ui-monospace,monospace;background:#f3f4f6;border-radius:4px}
pre{padding:.7rem;overflow:auto}code{padding:0 .2rem}section{border-top:1px solid #d0d7de;margin-top:1.5rem}
.method{font-weight:700;color:#fff;background:#0969da;border-radius:4px;padding:.1rem .4rem;margin-right:.4rem}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left}
"""


def _text(value: Any) -> str:
    return html.escape(str(value))


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


def docs_html(document: dict[str, Any], *, spec_path: str) -> bytes:
    info = document["info"]
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_text(info['title'])}</title>",
        f"<style>{STYLE}</style></head><body><h1>{_text(info['title'])}</h1>",
        f"<p>Version {_text(info['version'])}. Machine-readable: <a href='{_text(spec_path)}'>OpenAPI 3.1</a>.</p>",
        f"<p>{_text(info['description'])}</p>",
    ]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            statuses = ", ".join(operation["responses"])
            parts.append(
                f"<section id='{_text(operation['operationId'])}'><h2><span class=method>{_text(method.upper())}</span>"
                f"<code>{_text(path)}</code></h2><p><b>{_text(operation['summary'])}.</b>"
                f" {_text(operation['description'])}</p>{_parameters(operation['parameters'])}"
                f"<p>Responses: {_text(statuses)}.</p><pre>"
                f"{_text(json.dumps(operation['responses']['200']['content']['application/json']['schema'], indent=2))}"
                "</pre></section>"
            )
    parts.append("<section><h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(
            f"<h3 id='schema-{_text(name)}'>{_text(name)}</h3><pre>{_text(json.dumps(schema, indent=2))}</pre>"
        )
    parts.append("</section></body></html>")
    return "".join(parts).encode()
