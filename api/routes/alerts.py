"""``/v1/alerts``: a key's alert rules and the events they fired.

    POST   /v1/alerts                 create a rule (201); 400 naming the field when invalid
    GET    /v1/alerts                 the key's active rules
    DELETE /v1/alerts/{id}            deactivate one (204; 404 when the key has no such rule)
    GET    /v1/alerts/events?since=T  the key's events fired after T (oldest first)

Every route needs a key with the ``alerts`` scope. A key sees only its own rules and events: the
owner of a rule is the key's stable id (``key_...`` for a stored key, ``env_...`` for one of
``API_KEYS``), never the key itself.
Each change is announced on ``{prefix}alert_rules`` after it is committed, so the live flow
applies it within a second; events reach the key's WebSockets on ``/v1/stream`` as
``{"type": "alert"}`` (and ``{"type": "alert_summary"}`` past the rate limit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, Res
from api.params import SYMBOL_MAX, SYMBOL_PATTERN, Instant
from api.problems import Problem, clip, problems
from core import alerts
from core.alert_delivery import announce_rules
from core.layout import LayoutError, normalise_symbol
from core.stores import alerts as store
from core.stores.postgres import migrate

router = APIRouter(prefix="/v1", tags=["alerts"])
_MIGRATED: set[str] = set()
MAX_EVENTS = 1000
_ERRORS = problems(400, 401, 403, 429, 503, c400="an invalid field, named first in the detail")


class RuleIn(BaseModel):
    """A rule to create; ``params`` depend on ``kind`` (see the README)."""

    model_config = ConfigDict(extra="forbid")
    # The schema states each field's domain; the checks stay in check_rule so that a bad value
    # is a 400 naming the field in the same words as every other rule error.
    symbol: str = Field(
        examples=["AAPL"], json_schema_extra={"pattern": SYMBOL_PATTERN, "maxLength": SYMBOL_MAX}
    )
    timeframe: str = Field(json_schema_extra={"enum": list(alerts.TIMEFRAMES)})
    kind: str = Field(json_schema_extra={"enum": list(alerts.KINDS)})
    params: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"level": 200}],
        description="depend on kind; a combination the kind does not allow is a 400",
    )
    cooldown: int = Field(
        0,
        description="seconds (event time) between two events of the rule",
        json_schema_extra={"minimum": 0, "maximum": alerts.MAX_COOLDOWN_S},
    )
    expires_at: dt.datetime | None = Field(None, description="the rule stops at this time")


class RuleOut(BaseModel):
    """A stored rule."""

    id: str
    symbol: str
    timeframe: str
    kind: str
    params: dict[str, Any]
    cooldown: int
    active: bool
    expires_at: dt.datetime | None
    created_at: dt.datetime
    evaluated_on: str = Field(description="trades, final intraday bars, or the daily pipeline")


class RulesResponse(BaseModel):
    """The key's active rules."""

    rules: list[RuleOut]


class EventOut(BaseModel):
    """One fired alert."""

    id: str
    rule_id: str
    symbol: str
    timeframe: str
    kind: str
    fired_at: dt.datetime
    event_at: dt.datetime
    value: float
    message: str
    delivered_at: dt.datetime | None


class EventsResponse(BaseModel):
    """Events after ``since``, oldest first; ask again with ``since`` = ``next``."""

    events: list[EventOut]
    next: dt.datetime | None


@contextmanager
def _db(res: Res) -> Iterator[psycopg.Connection[Any]]:
    with res.postgres() as conn:
        url = res.database_url()
        if url not in _MIGRATED:
            migrate(conn)
            _MIGRATED.add(url)
        yield conn


def _out(row: dict[str, Any]) -> RuleOut:
    rule = store.to_rule(row)
    where = "trades" if rule.on_trades else "final intraday bars"
    if rule.timeframe in alerts.DAILY:
        where = "the daily pipeline (final bars)"
    fields = {k: row[k] for k in RuleOut.model_fields if k in row}
    return RuleOut(**fields, evaluated_on=where)


def check_rule(body: RuleIn, now: dt.datetime) -> store.NewRule:
    """The rule to store, or :class:`core.alerts.RuleError` naming the bad field."""
    try:
        symbol = normalise_symbol(body.symbol)
    except LayoutError as exc:
        alerts.invalid("symbol", str(exc))
    timeframe = alerts.check_timeframe(body.timeframe)
    params = alerts.check_params(body.kind, body.params)
    cooldown = alerts.check_cooldown(body.cooldown)
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            alerts.invalid("expires_at", "needs a time zone (e.g. Z)")
        if body.expires_at <= now:
            alerts.invalid("expires_at", "is in the past")
    return store.NewRule(owner="", symbol=symbol, timeframe=timeframe, kind=body.kind,
                         params=params, cooldown=cooldown, expires_at=body.expires_at)  # fmt: skip


@router.post("/alerts", status_code=status.HTTP_201_CREATED, response_model=RuleOut,
             responses=_ERRORS)  # fmt: skip
def create(res: Res, key: CurrentKey, body: RuleIn) -> RuleOut:
    """Create a rule; the live flow evaluates it within a second."""
    try:
        rule = check_rule(body, dt.datetime.now(dt.UTC))
    except alerts.RuleError as exc:
        raise Problem(400, f"{exc.field}: {clip(exc.message, 200)}", kind="invalid-rule") from None
    with _db(res) as conn:
        row = store.create_rule(conn, store.NewRule(**{**rule.__dict__, "owner": key.id}))
    announce_rules(res.redis(), res.settings.redis_prefix, row["id"], "created")
    return _out(row)


@router.get("/alerts", response_model=RulesResponse, responses=_ERRORS)
def list_rules(res: Res, key: CurrentKey) -> RulesResponse:
    """The key's active rules, oldest first."""
    with _db(res) as conn:
        return RulesResponse(rules=[_out(r) for r in store.owner_rules(conn, key.id)])


@router.get("/alerts/events", response_model=EventsResponse, responses=_ERRORS)
def events(
    res: Res,
    key: CurrentKey,
    since: Annotated[
        Instant | None, Query(description="only events fired after this time (RFC 3339)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
) -> EventsResponse:
    """The key's events fired after ``since``."""
    with _db(res) as conn:
        rows = store.owner_events(conn, key.id, since, limit)
    out = [EventOut(**{k: r[k] for k in EventOut.model_fields}) for r in rows]
    return EventsResponse(events=out, next=out[-1].fired_at if out else since)


@router.delete(
    "/alerts/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ERRORS, **problems(404, c404="the key has no such active rule")},
)
def delete(res: Res, key: CurrentKey, rule_id: Annotated[str, Path(max_length=64)]) -> Response:
    """Deactivate one of the key's rules (its events stay readable)."""
    with _db(res) as conn:
        found = store.deactivate(conn, key.id, rule_id)
    if not found:
        raise Problem(404, f"no active rule {clip(rule_id)}", kind="not-found")
    announce_rules(res.redis(), res.settings.redis_prefix, rule_id, "deleted")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
