"""The PostgreSQL 16 binaries from the ``pgserver`` wheel, and a private copy for the service user.

``initdb`` and ``postgres`` are run directly; pgserver's Python API is not used because it runs
``useradd`` as root. When the binaries are not usable by the service user (see
:mod:`perseus_cli.devstack.service_user`; the venv under ``/root``, or installed with umask 077), the
needed parts (``initdb``, ``postgres``, ``lib/postgresql``, ``share`` and ``pgserver.libs``,
about 20 MB, in the wheel's layout that the binaries' RPATH relies on) are copied once to
``<data_dir>/postgres/install``, owned by root and readable by all, and re-copied when the
source changes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.settings import StartupError
from perseus_cli.devstack.service_user import ServiceUser

logger = logging.getLogger(__name__)

__all__ = ["PgInstall"]


@dataclass(frozen=True, slots=True)
class PgInstall:
    """A bundled PostgreSQL, in the pgserver wheel's layout.

    ``root`` holds ``pgserver/pginstall/{bin,lib,share}`` and ``pgserver.libs``; ``initdb`` finds
    libpq through its RPATH ``$ORIGIN/../../../pgserver.libs``, so a copy keeps this layout.
    """

    root: Path

    PARTS: ClassVar[tuple[str, ...]] = (
        "pgserver/pginstall/bin/initdb",
        "pgserver/pginstall/bin/postgres",
        "pgserver/pginstall/lib/postgresql",
        "pgserver/pginstall/share",
        "pgserver.libs",
    )

    @classmethod
    def bundled(cls) -> PgInstall:
        spec = importlib.util.find_spec("pgserver")
        if spec is None or spec.origin is None:
            raise StartupError("embedded PostgreSQL: the pgserver package is not installed")
        return cls(Path(spec.origin).parent.parent)

    @property
    def bin_dir(self) -> Path:
        return self.root / "pgserver" / "pginstall" / "bin"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def bki(self) -> Path:
        """A file initdb must read: stands for all of ``share``."""
        return self.root / "pgserver" / "pginstall" / "share" / "postgresql" / "postgres.bki"

    def fingerprint(self) -> str:
        return f"{self.root.resolve()}\n{self.postgres.stat().st_mtime_ns}\n{self.postgres.stat().st_size}\n"

    def usable_by(self, user: ServiceUser) -> bool:
        return user.can('"$1" -V && "$2" -V && test -r "$3"', str(self.postgres), str(self.initdb), str(self.bki))

    def private_copy(self, target: Path) -> PgInstall:
        """Copy the needed parts to ``target`` once (again when the source changes)."""
        fingerprint = self.fingerprint()
        stamp = target / ".source"
        with contextlib.suppress(OSError):
            if stamp.read_text() == fingerprint:
                return PgInstall(target)
        logger.info("the PostgreSQL user cannot use the binaries in %s; copying them to %s (once)", self.root, target)
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for part in self.PARTS:
            source, dest = self.root / part, staging / part
            if source.is_dir():
                shutil.copytree(source, dest, symlinks=False)
            elif source.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)
        for path in _walk(staging):
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
        (staging / ".source").write_text(fingerprint)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return PgInstall(target)


def _walk(top: Path) -> Iterator[Path]:
    yield top
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            yield Path(root, name)
