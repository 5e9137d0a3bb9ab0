"""Operations: ``/livez`` (the process answers), ``/readyz`` (it can serve), ``/metrics``.

``/health`` (in :mod:`api.routes.health`) stays as it was for existing monitors. None of these
needs a key: orchestrators and scrapers call them. ``/readyz`` turns 503 as soon as shutdown
begins, so a load balancer stops sending before the process stops answering.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from api import metrics
from api.deps import Res
from api.models import HealthResponse
from api.routes.health import HEALTHY, run_checks

router = APIRouter(tags=["operations"])


@router.get("/livez", response_model=HealthResponse)
async def livez() -> HealthResponse:
    """200 while the process can answer at all (restart it when this fails)."""
    return HealthResponse(status="ok", checks={})


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "not ready, or shutting down"}},
)
async def readyz(request: Request, res: Res) -> JSONResponse:
    """200 when Postgres, Redis and the lake answer and the process is not stopping."""
    checks = await run_in_threadpool(run_checks, res)
    if getattr(request.app.state, "stopping", False):
        checks["shutdown"] = "in progress"
    ok = all(v in HEALTHY for v in checks.values())
    body = HealthResponse(status="ok" if ok else "degraded", checks=checks)
    return JSONResponse(
        body.model_dump(), status_code=200 if ok else 503, headers={"Cache-Control": "no-store"}
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus() -> Response:
    """Prometheus metrics: requests by route and status, latency, sockets, cache hits."""
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
