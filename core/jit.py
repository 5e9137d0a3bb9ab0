"""numba with its on-disk cache where the process may write: shared by every compiled loop.

Loops are compiled on first use and cached beside their module, or where the process may write
(:func:`cache_dir`; ``NUMBA_CACHE_DIR`` wins), or not at all rather than failing. Import this
module before numba: it sets ``NUMBA_CACHE_DIR``, which numba reads when it is imported.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core import cache


def cache_dir(env: Mapping[str, str], here: Path, writable: Callable[[Path], bool]) -> str | None:
    """Where numba should keep the compiled loops, or None for numba's own choice.

    ``NUMBA_CACHE_DIR`` wins; else beside the modules (numba's default) when writable; else the
    pipeline's cache (``CONDVEST_CACHE_DIR``, ``$XDG_CACHE_HOME/condvest``, ``~/.cache/condvest``);
    else a per-user directory under the temporary directory. A container running as an
    unprivileged user over a root-owned install takes one of the last two.
    """
    if env.get("NUMBA_CACHE_DIR") or writable(here):
        return None
    for candidate in (
        cache.root(env) / "numba",
        Path(tempfile.gettempdir()) / f"condvest-numba-{os.getuid()}",
    ):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if writable(candidate):
            return str(candidate)
    return None


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


# the install's package folders share one owner: this one stands for all of them
_chosen = cache_dir(os.environ, Path(__file__).resolve().parent, _writable)
if _chosen is not None:
    os.environ["NUMBA_CACHE_DIR"] = _chosen  # read by numba when it is imported, just below

import numba  # noqa: E402


def jit(fn: Callable[..., Any], **options: Any) -> Any:
    """``numba.njit`` with the on-disk cache, or without it where none can be written.

    Without a cache each process compiles (a few seconds) instead of failing.
    """
    try:
        return numba.njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, nogil=True, **options)(fn)
