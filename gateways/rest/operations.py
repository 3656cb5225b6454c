"""What each REST route is, declared once: path, parameters, the proto message of its data, its cost.

Route modules register their handlers from an :class:`Operation`, parse their
parameters from its :class:`~gateways.rest.params.Param` list and project
their data with the message type it names; :mod:`gateways.rest.openapi`
writes the spec from the same objects. Pure declarations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from google.protobuf.descriptor import Descriptor
from sanic import Blueprint

from gateways.rest.params import Param, parse

_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
SYMBOL_SEGMENT = "/<symbol>"
SLASHED_SYMBOL_SEGMENTS = "/<base>/<quote>"


def path_values(match_info: dict[str, Any]) -> dict[str, str]:
    """Path parameters, URL-decoded; ``<base>/<quote>`` (a symbol written with its slash) as ``symbol``."""
    values = {name: unquote(str(value)) for name, value in match_info.items()}
    if "base" in values and "quote" in values:
        values["symbol"] = f"{values.pop('base')}/{values.pop('quote')}"
    return values


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    path: str  # OpenAPI form: /public/v1/candles/{exchange}/{symbol}
    summary: str
    description: str
    tag: str
    params: tuple[Param, ...]
    data: Descriptor  # the message each item of ``data`` is the public projection of
    many: bool = True  # ``data`` is a list (else one object)
    paged: bool = False  # the body has ``meta.next_cursor``
    # the body's ``meta`` of an unpaged answer (seed 004's fields: cached, latency_ms, ...): name -> JSON schema
    meta: tuple[tuple[str, dict[str, Any]], ...] = ()
    cost: str = "1"
    method: str = "GET"
    # streamed (issue 21): the 200 body is one item per line in one of these media types, not ``{"data": …}``
    streamed: tuple[str, ...] = ()

    @property
    def sanic_path(self) -> str:
        return _PATH_PARAM.sub(r"<\1>", self.path)

    def values(self, path: dict[str, str], query: dict[str, list[str]]) -> dict[str, Any]:
        return parse(self.params, path, query)

    def register(self, blueprint: Blueprint) -> Callable[[Any], Any]:
        """Decorator: add the handler to ``blueprint`` at this operation's path (the prefix stripped)."""
        prefix = blueprint.url_prefix or ""

        def add(handler: Any) -> Any:
            path = self.sanic_path.removeprefix(prefix)
            blueprint.add_route(handler, path, methods=[self.method], name=self.name)
            if path.endswith(SYMBOL_SEGMENT):  # BTC/USD written with its slash: one more segment
                slashed = path.removesuffix(SYMBOL_SEGMENT) + SLASHED_SYMBOL_SEGMENTS
                blueprint.add_route(handler, slashed, methods=[self.method], name=f"{self.name}_slashed")
            return handler

        return add
