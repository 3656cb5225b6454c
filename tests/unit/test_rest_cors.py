"""CORS headers for allowed, other and absent origins, and for preflights."""

from __future__ import annotations

from gateways.rest.cors import cors_headers


def test_any_origin() -> None:
    headers = cors_headers("https://a.example", ("*",))
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "X-RateLimit-Limit" in headers["Access-Control-Expose-Headers"]


def test_listed_origins_only() -> None:
    allowed = ("https://a.example",)
    assert cors_headers("https://a.example", allowed)["Vary"] == "Origin"
    assert cors_headers("https://b.example", allowed) == {}
    assert cors_headers(None, allowed) == {}


def test_preflight() -> None:
    headers = cors_headers("https://a.example", ("https://a.example",), preflight=True)
    assert "X-API-Key" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert int(headers["Access-Control-Max-Age"]) > 0
