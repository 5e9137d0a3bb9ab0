"""Polygon's trade-condition table for the live flow: fetched at start, cached, never fatal.

The flow needs the consolidated update rules before it folds a trade. They are fetched from
``/v3/reference/conditions`` (every page), and a copy is kept in the lake
(``reference/conditions/conditions.json``) so a start while Polygon is unreachable uses the
last table seen; with neither, the built-in table of :mod:`core.conditions` is used. Which
one was used is logged, since bars depend on it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.conditions import ConditionRules, ConditionTableError, fallback, from_polygon
from core.lake import Lake
from core.layout import reference_conditions
from dataflows.connectors.polygon import PolygonError, PolygonGateway

log = logging.getLogger(__name__)
PATH = "/v3/reference/conditions"


def fetch_rows(gateway: PolygonGateway) -> list[dict[str, Any]]:
    """Every stock trade condition row, following ``next_url``."""
    rows: list[dict[str, Any]] = []
    page = gateway.get_json(PATH, {"asset_class": "stocks", "data_type": "trade", "limit": 1000})
    while True:
        rows.extend(r for r in page.get("results") or [] if isinstance(r, dict))
        nxt = page.get("next_url")
        if not nxt:
            return rows
        page = gateway.get_json(str(nxt), {})


def load_rules(gateway: PolygonGateway | None, lake: Lake | None) -> ConditionRules:
    """Polygon's table, else the lake's cached copy, else the built-in one."""
    key = reference_conditions()
    if gateway is not None:
        try:
            rows = fetch_rows(gateway)
            rules = from_polygon(rows)
        except (PolygonError, ConditionTableError) as exc:
            log.warning("trade conditions: fetching failed (%s); trying the cached table", exc)
        else:
            if lake is not None:
                lake.write_bytes(key, json.dumps(rows, sort_keys=True).encode())
            log.info("trade conditions: %d rules from Polygon", len(rules.rules))
            return rules
    if lake is not None and lake.exists(key):
        try:
            rules = from_polygon(json.loads(lake.read_bytes(key)), source="cache")
        except (ValueError, ConditionTableError) as exc:
            log.warning("trade conditions: the cached table is unusable (%s)", exc)
        else:
            log.info("trade conditions: %d rules from the cached table", len(rules.rules))
            return rules
    log.warning("trade conditions: using the built-in table")
    return fallback()
