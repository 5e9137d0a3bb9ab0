"""The pipeline's own cache directory, for files that only save start-up work."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

CACHE_DIR_ENV: Final = "CONDVEST_CACHE_DIR"


def root(env: Mapping[str, str] = os.environ) -> Path:
    """``$CONDVEST_CACHE_DIR``, else ``$XDG_CACHE_HOME/condvest``, else ``~/.cache/condvest``."""
    base = env.get(CACHE_DIR_ENV) or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "condvest"
    )
    return Path(base)
