"""The unprivileged account embedded PostgreSQL runs as when we are root, and what it must reach.

PostgreSQL refuses to run as root, so as root it runs as :data:`SERVICE_USER` (``nobody``), with
supplementary groups dropped, and ``pgdata`` owned by that user. Only an unprivileged account is
acceptable: the database superuser (whoever has the generated password) can read and write
files as the server's OS user.

That user must reach the data directory. :func:`open_data_dir` makes the data directory itself
searchable by others (``o+x``, not readable) when it is not; a private *parent* (``/root``,
``/tmp/pytest-of-root``) cannot be fixed without weakening it, so it fails with one line naming
it: choose a data directory outside it, or run as a normal user. (It must also reach the
binaries; see :mod:`perseus_cli.devstack.pg_install`.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import StartupError
from perseus_cli.devstack.processes import server_env

logger = logging.getLogger(__name__)

__all__ = ["SERVICE_USER", "ServiceUser", "chown_tree", "open_data_dir"]

SERVICE_USER = "nobody"


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """The unprivileged account PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> ServiceUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise StartupError(
                f"embedded PostgreSQL refuses to run as root and there is no user {name!r} to run it as"
            ) from None
        if entry.pw_uid == 0:
            raise StartupError(f"embedded PostgreSQL: user {name!r} is root; it needs an unprivileged user")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def can(self, script: str, *args: str) -> bool:
        """Whether ``sh -c script`` succeeds as this user (permission probes)."""
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", script, "sh", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=server_env(),
                timeout=30,
                check=False,
                **self.popen_kwargs(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


def open_data_dir(user: ServiceUser, data_dir: Path, server_dir: Path) -> None:
    """Let ``user`` traverse to ``server_dir``: o+x on it and on ``data_dir``, else fail clearly."""
    _add_mode(data_dir, stat.S_IXOTH)
    server_dir.chmod(0o711)
    if not user.can('test -x "$1"', str(server_dir)):
        blocker = _private_ancestor(data_dir)
        where = f"{blocker} is private" if blocker else "a parent directory is not searchable"
        raise StartupError(
            f"embedded PostgreSQL cannot run as root and runs as {user.name!r}, which cannot reach "
            f"{server_dir} ({where}); use a data directory elsewhere (--data-dir or PERSEUS_DATA_DIR) "
            "or run as a normal user"
        )


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)
        logger.info(
            "made %s searchable by others (mode %o) so the PostgreSQL user can reach its data", path, mode | bits
        )


def _private_ancestor(path: Path) -> Path | None:
    """The outermost ancestor others cannot search (ignores groups and ACLs; for messages)."""
    for parent in reversed(path.parents):
        with contextlib.suppress(OSError):
            if not parent.stat().st_mode & stat.S_IXOTH:
                return parent
    return None


def chown_tree(top: Path, user: ServiceUser) -> None:
    """Give ``top`` and everything in it to ``user`` (never following symlinks), if not already."""
    if top.stat().st_uid == user.uid:
        return
    logger.info("giving %s to user %s", top, user.name)
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(top, user.uid, user.gid, follow_symlinks=False)
