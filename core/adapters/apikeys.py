"""API keys in PostgreSQL: generation, hashing, authentication, and the ``perseus keys`` command.

A key looks like ``pk_pro_<43 letters and digits>``: 43 characters drawn by
:mod:`secrets` from 62, i.e. 256 random bits, behind a readable tier marker.
Letters and digits only, so a double-click selects the whole key and no shell
or URL needs quoting. The marker is for humans only; the tier that counts is
the stored one.

Only ``SHA-256(key)`` is stored, never the key. A fast unsalted hash is the
right tool here, unlike for passwords: the key is uniformly random with 256
bits of entropy, so neither dictionaries nor brute force apply, and a slow
hash (bcrypt, argon2) would add its cost to every request without adding
safety. Being deterministic, the hash is also the lookup key: authentication
is one indexed read, and the stored digest is then compared with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

import asyncpg

from core.adapters.postgres import Connection, Executor, connect
from core.domain.keys import ApiKeyRecord, KeyTier  # the records are domain: the codec maps them too
from core.settings import database_url

logger = logging.getLogger(__name__)


KEY_MARKER = "pk"
TIER_MARKERS: Mapping[KeyTier, str] = MappingProxyType(
    {KeyTier.FREE: "free", KeyTier.PRO: "pro", KeyTier.INTERNAL: "int", KeyTier.ADMIN: "adm"}
)
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_RANDOM_CHARS = 43  # 43 * log2(62) > 256 bits
PREFIX_RANDOM_CHARS = 8  # shown in listings; leaves over 200 secret bits
MAX_NAME_LENGTH = 200
LAST_USED_RESOLUTION_S = 60  # last_used_at is written at most once a minute per key
MAX_BIGINT = 2**63 - 1
# Anything that could be a key; other strings are refused without a database read.
_KEY_SHAPE = re.compile(rf"{KEY_MARKER}_[a-z]{{1,8}}_[A-Za-z0-9_-]{{32,100}}")

_COLUMNS = "id, name, tier, prefix, created_at, revoked_at, last_used_at"


class AmbiguousKey(ValueError):
    """A prefix given to revoke matches more than one active key."""


def generate_key(tier: KeyTier | str) -> str:
    random_part = "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_RANDOM_CHARS))
    return f"{KEY_MARKER}_{TIER_MARKERS[KeyTier(tier)]}_{random_part}"


def hash_key(key: str) -> bytes:
    """SHA-256 digest of a key: what is stored and looked up (see the module docstring)."""
    return hashlib.sha256(key.encode()).digest()


def key_prefix(key: str) -> str:
    """The displayable start of a key: its markers and a few random characters."""
    parts = key.split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_MARKER:
        return f"{parts[0]}_{parts[1]}_{parts[2][:PREFIX_RANDOM_CHARS]}"
    return key[: len(KEY_MARKER) + PREFIX_RANDOM_CHARS]


def _record(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        tier=KeyTier(row["tier"]),
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


async def create_key(conn: Executor, *, tier: KeyTier | str, name: str = "") -> tuple[str, ApiKeyRecord]:
    """Create a key; returns the key itself (shown once, never stored) and its record."""
    tier = KeyTier(tier)
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"key name is longer than {MAX_NAME_LENGTH} characters")
    key = generate_key(tier)
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (name, tier, key_hash, prefix) VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
        name,
        tier.value,
        hash_key(key),
        key_prefix(key),
    )
    assert row is not None, "INSERT … RETURNING of one row returns it"
    record = _record(row)
    logger.info("api key created", extra={"fields": {"key_id": record.id, "tier": tier.value}})
    return key, record


async def replace_key(conn: Connection, *, tier: KeyTier | str, name: str) -> tuple[str, ApiKeyRecord, int]:
    """Rotate the key named ``name``: revoke every active key of that name and create a new one, in one
    transaction; returns the new key, its record and how many keys were revoked (``perseus up``'s dev key)."""
    if not name:
        raise ValueError("replacing a key needs its --name")
    async with conn.transaction():
        revoked = await conn.fetch(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL RETURNING id", name
        )
        key, record = await create_key(conn, tier=tier, name=name)
    for row in revoked:
        logger.info("api key revoked", extra={"fields": {"key_id": row["id"]}})
    return key, record, len(revoked)


async def authenticate(conn: Executor, key: str, *, record_use: bool = False) -> ApiKeyRecord | None:
    """The record of an active key; None for an unknown, malformed or revoked key.

    ``record_use`` updates ``last_used_at`` (at most once a minute); leave it
    off on read-only instances (``pw-host``, replicas).
    """
    if not isinstance(key, str) or not _KEY_SHAPE.fullmatch(key):
        return None
    digest = hash_key(key)
    row = await conn.fetchrow(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_hash = $1", digest)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest) or row["revoked_at"] is not None:
        return None
    if record_use:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL "
            "OR last_used_at < now() - make_interval(secs => $2))",
            row["id"],
            LAST_USED_RESOLUTION_S,
        )
    return _record(row)


async def list_keys(conn: Executor, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY id")
    return [_record(row) for row in rows]


async def revoke_key(conn: Connection, key_id_or_prefix: str) -> bool:
    """Revoke one active key named by numeric id, by its prefix (or a leading part of it), or by the key.

    True when a key was revoked; False when no active key matched. Raises
    :class:`AmbiguousKey` when a prefix matches several active keys.
    """
    ident = key_id_or_prefix.strip()
    if not ident:
        return False
    async with conn.transaction():
        if ident.isdecimal():
            if int(ident) > MAX_BIGINT:
                return False
            ids = [int(ident)]
        elif _KEY_SHAPE.fullmatch(ident) and (
            found := await conn.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", hash_key(ident))
        ):
            ids = [found]
        else:
            rows = await conn.fetch(
                "SELECT id FROM api_keys WHERE starts_with(prefix, $1) AND revoked_at IS NULL FOR UPDATE", ident
            )
            ids = [row["id"] for row in rows]
            if len(ids) > 1:
                raise AmbiguousKey(f"{ident!r} matches {len(ids)} active keys; give the id or a longer prefix")
        if not ids:
            return False
        revoked = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id", ids[0]
        )
    if revoked is not None:
        logger.info("api key revoked", extra={"fields": {"key_id": revoked}})
    return revoked is not None


# ``perseus keys`` -------------------------------------------------------------

_TABLE_HEADER = ("ID", "TIER", "PREFIX", "NAME", "CREATED", "LAST USED", "STATUS")
_TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


def _when(moment: datetime | None) -> str:
    return moment.strftime(_TIME_FORMAT) if moment is not None else "-"


def format_table(records: Sequence[ApiKeyRecord]) -> list[str]:
    """Lines of the ``perseus keys list`` table (never a key or a hash)."""
    rows = [_TABLE_HEADER] + [
        (
            str(r.id),
            r.tier.value,
            r.prefix,
            r.name or "-",
            _when(r.created_at),
            _when(r.last_used_at),
            f"revoked {_when(r.revoked_at)}" if r.revoked else "active",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else None


def records_json(records: Sequence[ApiKeyRecord]) -> str:
    """``perseus keys list --json``: one JSON array, one object per key, times in ISO 8601 UTC or null.

    The same fields as the table (never a key or a hash); ``revoked`` is null
    for an active key, so ``jq '.[] | select(.revoked == null)'`` lists those.
    """
    return json.dumps(
        [
            {
                "id": r.id,
                "name": r.name,
                "tier": r.tier.value,
                "prefix": r.prefix,
                "created": _iso(r.created_at),
                "last_used": _iso(r.last_used_at),
                "revoked": _iso(r.revoked_at),
            }
            for r in records
        ],
        indent=2,
    )


async def _run(dsn: str, args: argparse.Namespace) -> int:
    conn = await connect(dsn)
    try:
        match args.keys_command:
            case "create":
                if getattr(args, "replace", False):
                    key, record, revoked = await replace_key(conn, tier=args.tier, name=args.name or "")
                    print(f"revoked {revoked} active key(s) named {record.name!r}")
                else:
                    key, record = await create_key(conn, tier=args.tier, name=args.name or "")
                print(f"created {record.tier} key {record.id} ({record.prefix}); it is shown once, store it now:")
                print(key)  # alone on the last line: `perseus up` parses it
            case "list":
                records = await list_keys(conn)
                print(records_json(records) if args.json else "\n".join(format_table(records)))
            case "revoke":
                if not await revoke_key(conn, args.key_id):
                    print(
                        f"perseus keys revoke: no active key with id or prefix {args.key_id!r}; "
                        "list them with `perseus keys list`",
                        file=sys.stderr,
                    )
                    return 1
                print(f"revoked {args.key_id}")
            case other:
                raise ValueError(f"unknown keys command {other!r}")
        return 0
    finally:
        await conn.close()


def run_keys(environ: Mapping[str, str], args: argparse.Namespace) -> int:
    """``perseus keys create|list|revoke``; StartupError when the database is unreachable."""
    dsn = database_url(environ)
    try:
        return asyncio.run(_run(dsn, args))
    except asyncpg.UndefinedTableError:
        print("perseus keys: the database has no api_keys table; run `perseus migrate` first", file=sys.stderr)
        return 1
    except ValueError as exc:  # AmbiguousKey, an unknown tier, a name too long
        print(f"perseus keys {args.keys_command}: {exc}", file=sys.stderr)
        return 1
