"""The chart page in a real browser: headless Chromium (Debian's) against ``python -m api``.

It loads ``/chart/{symbol}``, counts the candles drawn (every bar the API serves), sees a live
bar published on Redis move the last candle, and keeps a screenshot (``chart.png`` in the
test's temporary directory, printed at the end) as the run's artefact.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from api.routes.chart import LIBRARY
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.stores import postgres
from core.stores.redis import LiveStore, connect
from tests.integration.test_api_logs import Served, env_for, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "chart-key-" + "Q3wz" * 8
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DAYS = [dt.date(2026, 1, 5) + dt.timedelta(days=i) for i in range(40) if (i % 7) < 5]


def seed(lake: Lake, pg_url: str) -> None:
    ingested = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = []
    price = 100.0
    for i, d in enumerate(DAYS):
        step = 1.5 if i % 3 else -2.0
        rows.append(
            {
                "symbol": "CHRT", "date": d, "open": price, "high": price + 3, "low": price - 3,
                "close": price + step, "volume": 1000.0 + 10 * i, "vwap": None,
                "transactions": None, "source": "rest", "ingested_at": ingested,
            }
        )  # fmt: skip
        price += step
    lake.write_table(layout.consolidated("CHRT"), pa.Table.from_pylist(rows, schema=BRONZE_DAILY))
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)


@pytest.fixture()
def served(
    tmp_path: Path, local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Served]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    if not LIBRARY.exists():
        pytest.fail("the chart's library is not installed: run `make web`")
    seed(local_lake, pg_url)
    env = env_for(local_lake, pg_url, redis_server_url, redis_prefix, API_KEYS=KEY, APP_ENV="test")
    s = serve(tmp_path, env)
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.timeout(180)
def test_chart_draws_every_bar_and_moves_live(
    served: Served, tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:  # a fresh, empty profile of its own
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{served.base}/chart/chrt?interval=1d#key={KEY}")
            page.wait_for_selector("#status[data-subscribed='true']", timeout=30_000)
            status = page.locator("#status")
            assert status.get_attribute("data-bars") == str(len(DAYS)), status.text_content()
            assert page.evaluate("location.hash") == ""  # the key left the address bar
            assert page.locator("#chart canvas").count() > 0

            store = LiveStore(connect(redis_server_url), redis_prefix)
            start = dt.datetime.combine(DAYS[-1], dt.time(15, 30), dt.UTC).isoformat()
            store.set_bar("CHRT", {"start": start, "open": 121.0, "high": 131.0, "low": 119.0,
                                   "close": 130.5, "volume": 500.0})  # fmt: skip
            store.r.close()
            page.wait_for_selector("#status[data-live='1']", timeout=15_000)
            last = page.evaluate("window.chartState.bars")
            assert last == len(DAYS)  # the live minute extends the last day's candle
            shot = tmp_path / "chart.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert not errors, errors
            keep = os.environ.get("CHART_SCREENSHOT")
            if keep:
                shutil.copy(shot, keep)
            print(f"chart screenshot: {shot}")
        finally:
            browser.close()
