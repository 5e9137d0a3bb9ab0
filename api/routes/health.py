"""``GET /health``: can the API reach Postgres, Redis and the lake? No key needed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow.fs as pafs
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Res
from api.models import HealthResponse
from api.resources import Resources

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def _postgres(res: Resources) -> None:
    with res.postgres() as conn:
        conn.execute("SELECT 1")


def _redis(res: Resources) -> None:
    res.redis().ping()


def _lake(res: Resources) -> None:
    lake = res.lake()
    if lake.fs.get_file_info(lake.root).type == pafs.FileType.NotFound:
        msg = f"lake root {lake.url} not found"
        raise FileNotFoundError(msg)


CHECKS: dict[str, Callable[[Resources], None]] = {
    "postgres": _postgres,
    "redis": _redis,
    "lake": _lake,
}


def run_checks(res: Resources) -> dict[str, str]:
    """``ok`` or ``error: <kind>`` per dependency (no messages: they may name hosts)."""
    out: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(res)
        except Exception as exc:  # a health check reports failures, it never raises
            log.warning("health check %s failed: %s", name, type(exc).__name__)
            out[name] = f"error: {type(exc).__name__}"
        else:
            out[name] = "ok"
    return out


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "a dependency failed"}},
)
def health(res: Res) -> JSONResponse:
    """200 when every dependency answers, else 503 naming the failed ones."""
    checks = run_checks(res)
    ok = all(v == "ok" for v in checks.values())
    body = HealthResponse(status="ok" if ok else "degraded", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
