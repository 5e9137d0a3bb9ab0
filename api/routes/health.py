"""``GET /health``: can the API reach Postgres, Redis and the lake? No key needed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import pyarrow.fs as pafs
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Res
from api.models import HealthResponse
from api.resources import Resources

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def _postgres(res: Resources) -> str:
    with res.postgres() as conn:
        conn.execute("SELECT 1")
    return "ok"


def _redis(res: Resources) -> str:
    res.redis().ping()
    return "ok"


def _lake(res: Resources) -> str:
    """``ok``; ``empty`` when the root is missing but its bucket (or parent folder) is there.

    A fresh deployment serves before the first pipeline run has written anything: that is not
    a failure to restart the task for.
    """
    lake = res.lake()
    if lake.fs.get_file_info(lake.root).type == pafs.FileType.Directory:
        return "ok"
    container = lake.root.split("/", 1)[0] if not lake.is_local else lake.root.rsplit("/", 1)[0]
    if lake.fs.get_file_info(container or "/").type == pafs.FileType.Directory:
        return "empty"
    msg = f"neither {lake.url} nor its container exists"
    raise FileNotFoundError(msg)


HEALTHY: Final = frozenset({"ok", "empty"})
CHECKS: dict[str, Callable[[Resources], str]] = {
    "postgres": _postgres,
    "redis": _redis,
    "lake": _lake,
}


def run_checks(res: Resources) -> dict[str, str]:
    """A state per dependency: ``ok``, ``empty`` or ``error: <kind>`` (no message: it may name hosts)."""
    out: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            out[name] = check(res)
        except Exception as exc:  # a health check reports failures, it never raises
            log.warning("health check %s failed: %s", name, type(exc).__name__)
            out[name] = f"error: {type(exc).__name__}"
    return out


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "a dependency failed"}},
)
def health(res: Res) -> JSONResponse:
    """200 when every dependency answers (an empty lake is fine), else 503 naming the failures."""
    checks = run_checks(res)
    ok = all(v in HEALTHY for v in checks.values())
    body = HealthResponse(status="ok" if ok else "degraded", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
