"""The recovery store a deployed flow runs with, created on its first start.

``python -m bytewax.run M:flow -r DIR -s S -b B`` refuses a directory without recovery
partitions, and ``python -m bytewax.recovery`` refuses one that has them, so a container cannot
run either unconditionally. ``bytewax.run`` imports the flow before it opens the store, so the
flow's factory calls :func:`prepare_recovery` with the process's arguments: a first start
creates the partitions (and the flow reads its input from the beginning it is configured
with), every later start resumes from the last snapshot.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)
PARTITIONS: Final = 1
"""One store partition per process is enough: snapshots are small and written per epoch."""


def recovery_directory(argv: Sequence[str]) -> Path | None:
    """The ``-r/--recovery-directory`` given to ``bytewax.run`` in ``argv``, if any."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-r", "--recovery-directory", type=Path, default=None)
    known, _ = p.parse_known_args(list(argv))
    found: Path | None = known.recovery_directory
    return found


def has_partitions(directory: Path) -> bool:
    """Whether ``directory`` already holds a recovery store."""
    return any(directory.glob("part-*.sqlite3"))


def ensure_partitions(directory: Path, partitions: int = PARTITIONS) -> bool:
    """Create the store in ``directory`` unless it has one; True when it was created."""
    from bytewax.recovery import init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    if has_partitions(directory):
        return False
    init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]
    return True


def _run_by_bytewax() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "bytewax.run"


def prepare_recovery(argv: Sequence[str] | None = None) -> Path | None:
    """Make the recovery directory of this ``bytewax.run`` usable; None without recovery.

    ``argv`` defaults to the process's arguments, read only when ``bytewax.run`` is the main
    module (another program's ``-r``, such as pytest's, means something else).
    """
    if argv is None:
        if not _run_by_bytewax():
            return None
        argv = sys.argv
    directory = recovery_directory(argv[1:])
    if directory is None:
        return None
    if ensure_partitions(directory):
        log.info("recovery: new store in %s; no snapshot, reading from the start", directory)
    else:
        log.info("recovery: resuming from the snapshots in %s", directory)
    return directory
