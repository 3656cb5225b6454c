"""``python -m tests.chaos [--short] [--keep]``: run the drills, print the table, exit 1 when an invariant breaks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from tests.chaos.run import run
from tests.chaos.stack import Stack


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the run like Ctrl-C: through the finally that stops the stack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the CI version: shorter faults, fewer clients (<= 4 min)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, data) even when all holds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(tempfile.mkdtemp(prefix="perseus-chaos-"))
    run_dir.chmod(0o755)  # as root, PostgreSQL runs as an unprivileged user that must reach its data below
    print(f"chaos: run directory {run_dir} (process logs in logs/)", flush=True)
    stack = Stack(run_dir)
    ok = False
    try:
        stack.start()
        print(f"chaos: stack up: rest {stack.rest_url}, ws {stack.ws_url}, redis {stack.redis_url}", flush=True)
        outcome = asyncio.run(run(stack, "short" if args.short else "full", run_dir))
        ok = outcome.ok
    except KeyboardInterrupt:
        print("chaos: interrupted; stopping the stack", file=sys.stderr)
    finally:
        stack.stop()
        if ok and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"chaos: logs and data kept in {run_dir}", flush=True)
    print("chaos: every invariant holds" if ok else "chaos: FAILED (see the table above)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
